"""The Django side of the benchmark: seeding, the fan-out, single-action round trips, loss count.

Run by bench/bridge.py as a subprocess with the stack's environment, one
sub-command per run; prints one JSON object on stdout.

    python bench/driver.py seed --agents N --out agents.json
    python bench/driver.py fanout --count 1000
    python bench/driver.py rtt --samples 100
    python bench/driver.py lost
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this folder is sys.path[0] and bench/bridge.py would shadow the bridge app.
sys.path[:] = [str(REPO)] + [entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench"]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "caisey.settings")

import django

django.setup()

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from bridge.models import OutboxMessage, OutboxStatus
from caisey import secrets
from caisey.actors import Party
from endpoints import services as endpoint_services
from endpoints.models import Endpoint, Role, Tenant
from sessions_app.models import ACTION_FINAL, Action, ActionStatus, SupportSession
from sessions_app.services import actions as action_services
from sessions_app.services import bulk as session_bulk
from sessions_app.services import sessions as session_services

TENANT_SLUG = os.environ.get("BENCH_TENANT", "bench")
TECH = f"{TENANT_SLUG}-tech"
FINAL = [str(s) for s in ACTION_FINAL]


def tenant() -> Tenant:
    return Tenant.all_tenants.get(slug=TENANT_SLUG)


def technician():
    return get_user_model().objects.select_related("membership").get(username=TECH)


def bench_endpoints():
    return Endpoint.all_tenants.filter(tenant=tenant()).order_by("hostname")


# --- seed ------------------------------------------------------------------------------


def seed(args) -> dict:
    t0 = time.perf_counter()
    password = secrets.new_secret()
    ten = endpoint_services.tenant_create(
        name=f"Bench {TENANT_SLUG}", slug=TENANT_SLUG, admin_username=f"{TENANT_SLUG}-admin", admin_password=password
    )
    endpoint_services.membership_create(tenant=ten, username=TECH, password=password, role=Role.TECHNICIAN)
    group = endpoint_services.client_group_create(
        actor=Party.OPERATOR, tenant=ten, name="Bench client", slug="bench-client"
    )
    agents, rows = [], []
    for i in range(args.agents):
        credential = secrets.new_secret()
        endpoint = Endpoint(
            tenant=ten,
            client_group=group,
            hostname=f"bench-{i:06d}",
            machine_id=f"bench-machine-{i:06d}",
            credential_hash=secrets.digest(credential),
        )
        rows.append(endpoint)
        agents.append([str(endpoint.pk), credential])
    with transaction.atomic():
        Endpoint.all_tenants.bulk_create(rows, batch_size=500)
    Path(args.out).write_text(json.dumps(agents))
    return {"endpoints": len(agents), "seconds": time.perf_counter() - t0}


# --- fan-out ---------------------------------------------------------------------------


def fanout(args) -> dict:
    actor = technician()
    endpoints = list(bench_endpoints()[: args.count])
    marks: dict[str, float] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    # The outer atomic lets us note the commit: our on_commit callback is the first to run,
    # before the doorbells bulk_run_start registered.
    with transaction.atomic():
        transaction.on_commit(lambda: marks.setdefault("commit", time.perf_counter()))
        run = session_bulk.bulk_run_start(
            actor=actor, endpoints=endpoints, kind="system_summary", params={}, reason="bench fan-out"
        )
        marks["body"] = time.perf_counter()
    marks["returned"] = time.perf_counter()
    request_cpu = time.process_time() - cpu0
    first_final = half_final = all_dispatched = all_final = None
    deadline = t0 + args.timeout
    counts: dict[str, int] = {}
    while time.perf_counter() < deadline:
        counts = dict(Action.all_tenants.filter(bulk_run=run).values_list("status").annotate(n=Count("id")).order_by())
        now = time.perf_counter()
        final = sum(n for status, n in counts.items() if status in FINAL)
        queued = counts.get(ActionStatus.QUEUED, 0)
        if final and first_final is None:
            first_final = now
        if final * 2 >= len(endpoints) and half_final is None:
            half_final = now
        if queued == 0 and all_dispatched is None:
            all_dispatched = now
        if final == len(endpoints):
            all_final = now
            break
        time.sleep(0.05)
    rel = lambda t: None if t is None else round(t - t0, 3)
    return {
        "endpoints": len(endpoints),
        "request_body_s": rel(marks.get("body")),  # sessions + actions written (inside the transaction)
        "commit_s": rel(marks.get("commit")),  # committed
        "request_s": rel(marks["returned"]),  # doorbells rung (on_commit callbacks done): the call returns
        "request_cpu_s": round(request_cpu, 3),  # CPU the requesting process spent in bulk_run_start
        "first_final_s": rel(first_final),
        "half_final_s": rel(half_final),
        "all_dispatched_s": rel(all_dispatched),
        "all_final_s": rel(all_final),
        "final": sum(n for status, n in counts.items() if status in FINAL),
        "statuses": counts,
    }


# --- single-action round trips ------------------------------------------------------------


def rtt(args) -> dict:
    actor = technician()
    endpoint = bench_endpoints().last()
    session = SupportSession.all_tenants.filter(endpoint=endpoint, status="open").first()
    if session is None:
        session = session_services.session_open(actor=actor, endpoint=endpoint, reason="bench rtt")
    deadline = time.perf_counter() + 30
    while OutboxMessage.all_tenants.filter(endpoint=endpoint, status=OutboxStatus.QUEUED).exists():
        if time.perf_counter() > deadline:
            break
        time.sleep(0.01)
    samples, timeouts = [], 0
    for _ in range(args.samples):
        t0 = time.perf_counter()
        action = action_services.action_request(actor=actor, session=session, kind="system_summary", params={})
        while True:
            if Action.all_tenants.filter(pk=action.pk, status__in=FINAL).exists():
                samples.append(time.perf_counter() - t0)
                break
            if time.perf_counter() - t0 > args.timeout:
                timeouts += 1
                break
            time.sleep(args.poll)
    samples.sort()
    pick = lambda q: round(samples[min(len(samples) - 1, round(q / 100 * (len(samples) - 1)))] * 1000, 1)
    return {
        "samples": len(samples),
        "timeouts": timeouts,
        "endpoint": str(endpoint.pk),
        "p50_ms": pick(50) if samples else None,
        "p99_ms": pick(99) if samples else None,
        "min_ms": round(samples[0] * 1000, 1) if samples else None,
        "max_ms": round(samples[-1] * 1000, 1) if samples else None,
    }


# --- what was lost ---------------------------------------------------------------------------


def lost(args) -> dict:
    """What did not end well, split three ways, since "not acked after 30 s" on a saturated server
    mixed ends a technician sees with work still moving:

    - ``ended_visibly``: outbox rows cancelled or failed_to_deliver (the console shows them; a
      timed-out action cancels what it had queued), actions expired or timed out are final anyway;
    - ``in_flight``: queued rows and unfinished actions whose next retry or deadline has not
      passed by more than ``--grace`` (the sweeps will move them);
    - ``lost_messages``: queued rows whose next attempt, and unfinished actions whose deadline or
      expiry, passed more than ``--grace`` ago: due work no sweep moved. Only these are loss.
    """
    ten = tenant()
    deadline = time.perf_counter() + args.wait
    while True:
        outbox = dict(
            OutboxMessage.all_tenants.filter(endpoint__tenant=ten)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        )
        actions = dict(Action.all_tenants.filter(tenant=ten).values_list("status").annotate(n=Count("id")).order_by())
        unacked = sum(n for status, n in outbox.items() if status != OutboxStatus.ACKED)
        not_final = sum(n for status, n in actions.items() if status not in FINAL)
        if unacked + not_final == 0 or time.perf_counter() > deadline:
            break
        time.sleep(0.2)
    overdue = timezone.now() - timedelta(seconds=args.grace)
    queued = OutboxMessage.all_tenants.filter(endpoint__tenant=ten, status=OutboxStatus.QUEUED)
    unfinished = Action.all_tenants.filter(tenant=ten).exclude(status__in=FINAL)
    stuck_rows = queued.filter(next_attempt_at__lt=overdue)
    stuck_actions = unfinished.filter(Q(deadline_at__lt=overdue) | Q(deadline_at__isnull=True, expires_at__lt=overdue))
    stuck = list(
        stuck_rows.values(
            "kind",
            "status",
            "attempts",
            "last_error",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "body",
            "endpoint__last_seen_at",
            "endpoint__connection_id",
            "endpoint__disconnected_at",
            "endpoint__heartbeat_interval",
            "endpoint__mode",
        )[:10]
    )
    lost_rows, lost_actions = stuck_rows.count(), stuck_actions.count()
    return {
        "outbox_unacked": unacked,
        "actions_not_final": not_final,
        "ended_visibly": {s: n for s, n in outbox.items() if s not in (OutboxStatus.ACKED, OutboxStatus.QUEUED)},
        "in_flight": {"outbox": queued.count() - lost_rows, "actions": unfinished.count() - lost_actions},
        "lost_messages": lost_rows + lost_actions,
        "outbox": outbox,
        "actions": actions,
        "stuck_examples": stuck,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--agents", type=int, required=True)
    s.add_argument("--out", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--timeout", type=float, default=300.0)
    r = sub.add_parser("rtt")
    r.add_argument("--samples", type=int, default=100)
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--poll", type=float, default=0.002)
    lo = sub.add_parser("lost")
    lo.add_argument("--wait", type=float, default=15.0)
    lo.add_argument("--grace", type=float, default=30.0, help="seconds past a due time before it counts as lost")
    args = parser.parse_args()
    result = {"seed": seed, "fanout": fanout, "rtt": rtt, "lost": lost}[args.cmd](args)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
