"""``bulk_run_start`` in-process: wall time, CPU and database queries for N endpoints.

    .venv/bin/python bench/bulk_start.py --endpoints 1000

A fresh SQLite database in a temporary folder (or ``CAISEY_DATABASE_URL`` when set, on a fresh
tenant), N enrolled endpoints (half seen just now, half never seen: offline), then one bulk run
of ``system_summary`` over all of them, with CAISEY_DEBUG off unless set. The channel layer is the in-memory one (no Redis): the
doorbells' own cost is measured by bench/bridge.py. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as secrets_module
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")
os.environ.setdefault("CAISEY_DATA_DIR", tempfile.mkdtemp(prefix="caisey-bulk-bench-"))
os.environ.setdefault("CAISEY_LOG_LEVEL", "WARNING")
os.environ.setdefault("CAISEY_DEBUG", "false")  # production-like, as bench/bridge.py runs Daphne
if os.environ["CAISEY_DEBUG"].lower() in ("0", "false", "no", "off"):
    os.environ.setdefault("CAISEY_SECRET_KEY", secrets_module.token_urlsafe(48))

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from caisey import secrets
from caisey.actors import Party
from endpoints import services as endpoint_services
from endpoints.models import Endpoint, Role
from sessions_app.models import Action
from sessions_app.services import bulk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=1000)
    args = parser.parse_args()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    call_command("migrate", verbosity=0)
    slug = f"bulk{secrets.new_secret()[:8].lower()}"
    password = secrets.new_secret()
    tenant = endpoint_services.tenant_create(
        name=slug, slug=slug, admin_username=f"{slug}-admin", admin_password=password
    )
    tech = endpoint_services.membership_create(
        tenant=tenant, username=f"{slug}-tech", password=password, role=Role.TECHNICIAN
    )
    group = endpoint_services.client_group_create(actor=Party.OPERATOR, tenant=tenant, name=slug, slug=slug)
    now = timezone.now()
    rows = [
        Endpoint(
            tenant=tenant,
            client_group=group,
            hostname=f"bulk-{i:06d}",
            machine_id=f"bulk-machine-{slug}-{i:06d}",
            credential_hash=secrets.digest(secrets.new_secret()),
            last_seen_at=now if i % 2 == 0 else None,
        )
        for i in range(args.endpoints)
    ]
    with transaction.atomic():
        Endpoint.all_tenants.bulk_create(rows, batch_size=500)
    endpoints = list(Endpoint.all_tenants.filter(tenant=tenant).order_by("hostname"))
    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    # A wrapper, not CaptureQueriesContext: that one keeps only the last 9,000 queries.
    cpu0, t0 = time.process_time(), time.perf_counter()
    with connection.execute_wrapper(count):
        run = bulk.bulk_run_start(
            actor=tech.user, endpoints=endpoints, kind="system_summary", params={}, reason="bench"
        )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    result = {
        "endpoints": args.endpoints,
        "database": connection.vendor,
        "seconds": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "queries": len(queries),
        "actions": Action.all_tenants.filter(bulk_run=run).count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
