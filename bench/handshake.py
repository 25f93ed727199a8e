"""The hello path in-process: CPU per handshake (authenticate, record the connection, reconcile
prompts, claim the outbox), one at a time and grouped as the socket process's group commit does.

    .venv/bin/python bench/handshake.py --endpoints 500 [--profile]

A fresh SQLite database in a temporary folder (or ``CAISEY_DATABASE_URL``), N enrolled endpoints,
then N hellos through ``bridge.services.agent_handshake`` (one transaction each, as a socket
alone on a quiet server), then N more through ``bridge.batcher.apply_batch`` in batches of
``--batch`` (as a reconnect storm is applied). The channel layer is the in-memory one. Prints
one JSON object; ``--profile`` prints the top of a cProfile of the grouped run on stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import secrets as secrets_module
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")
os.environ.setdefault("CAISEY_DATA_DIR", tempfile.mkdtemp(prefix="caisey-hello-bench-"))
os.environ.setdefault("CAISEY_LOG_LEVEL", "WARNING")
os.environ.setdefault("CAISEY_DEBUG", "false")
os.environ.setdefault("CAISEY_RATE_CONNECTS_PER_ENDPOINT", "1000000/60")
if os.environ["CAISEY_DEBUG"].lower() in ("0", "false", "no", "off"):
    os.environ.setdefault("CAISEY_SECRET_KEY", secrets_module.token_urlsafe(48))

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from bridge import batcher, services
from caisey import secrets
from caisey.actors import Party
from caisey_agent import protocol as p
from endpoints import services as endpoint_services
from endpoints.models import Endpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    call_command("migrate", verbosity=0)
    slug = f"hello{secrets.new_secret()[:8].lower()}"
    tenant = endpoint_services.tenant_create(
        name=slug, slug=slug, admin_username=f"{slug}-admin", admin_password=secrets.new_secret()
    )
    group = endpoint_services.client_group_create(actor=Party.OPERATOR, tenant=tenant, name=slug, slug=slug)
    credentials = [secrets.new_secret() for _ in range(args.endpoints)]
    rows = [
        Endpoint(
            tenant=tenant,
            client_group=group,
            hostname=f"hello-{i:06d}",
            machine_id=f"hello-machine-{slug}-{i:06d}",
            credential_hash=secrets.digest(credential),
        )
        for i, credential in enumerate(credentials)
    ]
    with transaction.atomic():
        Endpoint.all_tenants.bulk_create(rows, batch_size=500)
    endpoints = list(Endpoint.all_tenants.filter(tenant=tenant).order_by("hostname"))
    machine = {"hostname": "bench", "os": "linux", "os_version": "6", "arch": "x86_64"}

    def hello(endpoint, credential):
        return p.Hello(
            endpoint_id=str(endpoint.pk), credential=credential, agent_version="bench", machine=machine, prompts=[]
        )

    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    pairs = list(zip(endpoints, credentials, strict=True))
    with connection.execute_wrapper(count):
        cpu0, t0 = time.process_time(), time.perf_counter()
        for endpoint, credential in pairs:
            services.agent_handshake(
                hello=hello(endpoint, credential), connection_id=secrets.new_secret(), remote_ip="b"
            )
        single_wall, single_cpu, single_queries = time.perf_counter() - t0, time.process_time() - cpu0, len(queries)
        queries.clear()
        profiler = cProfile.Profile() if args.profile else None
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for start in range(0, len(pairs), args.batch):
            units = [
                batcher.Unit.hello(hello=hello(endpoint, credential), connection_id=secrets.new_secret(), remote_ip="b")
                for endpoint, credential in pairs[start : start + args.batch]
            ]
            for outcome in batcher.apply_batch(units):
                if isinstance(outcome, BaseException):
                    raise outcome
        if profiler:
            profiler.disable()
        batch_wall, batch_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = args.endpoints
    result = {
        "handshakes": n,
        "database": connection.vendor,
        "one_by_one_cpu_ms_per_handshake": round(single_cpu / n * 1000, 3),
        "one_by_one_wall_ms_per_handshake": round(single_wall / n * 1000, 3),
        "one_by_one_queries_per_handshake": round(single_queries / n, 2),
        "grouped_batch": args.batch,
        "grouped_cpu_ms_per_handshake": round(batch_cpu / n * 1000, 3),
        "grouped_wall_ms_per_handshake": round(batch_wall / n * 1000, 3),
        "grouped_queries_per_handshake": round(len(queries) / n, 2),
    }
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
