"""Announce every change of an endpoint's connectivity that no event announced: heartbeats that
stopped without a clean disconnect (a killed agent, a sleeping laptop, a dead Daphne process), and
a path that became degraded or recovered. Only rows that may have changed are read."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from bridge import health
from bridge.models import AgentConnection, OutboxMessage, OutboxStatus
from bridge.services import presence_announce
from caisey import tenancy
from endpoints.models import Endpoint, Presence
from endpoints.presence import offline_after
from endpoints.services import endpoint_presence_record

# Degraded reasons carry figures that move every sweep ("waiting 31s", "waiting 36s"): a reason
# counts as changed when its wording does, so a degraded endpoint is not re-announced every sweep.
_FIGURES = re.compile(r"\d[\d,.]*")


def _same(endpoint: Endpoint, now: health.Connectivity) -> bool:
    return endpoint.presence_announced == now.state and _FIGURES.sub("#", endpoint.presence_reason) == _FIGURES.sub(
        "#", now.reason[:300]
    )


def run() -> int:
    """A sweep over every tenant (named: ``tenancy.system()``); each change is recorded in its
    endpoint's tenant by endpoints' service, and announced after its commit."""
    with tenancy.system():
        return _sweep(timezone.now())


def _candidates(now: datetime) -> set:
    """Endpoints whose connectivity may differ from what was announced: heartbeats overdue or
    resumed, announced degraded or waking (they may recover), or a path that may have crossed a
    degraded threshold (a message waiting, a slow delivery, connects within the window)."""
    shortest = min(settings.CAISEY["HEARTBEAT_ACTIVE_S"], settings.CAISEY["HEARTBEAT_LAZY_S"])
    window_start = now - timedelta(seconds=settings.CAISEY["DEGRADED_WINDOW_S"])
    ids = set(
        Endpoint.objects.filter(
            Q(presence_announced__in=[Presence.DEGRADED, Presence.WAKING])
            | (~Q(presence_announced=Presence.OFFLINE) & Q(last_seen_at__lt=now - offline_after(shortest)))
            # Announced offline, yet beating again on the same socket: a frozen agent (SIGSTOP, a
            # laptop's lid) that resumed before the server closed its connection. No connect says so.
            | Q(presence_announced=Presence.OFFLINE, last_seen_at__gte=now - offline_after(shortest))
        ).values_list("pk", flat=True)
    )
    # Otherwise an endpoint announced offline comes back only through a connect, which announces
    # itself. Of the others, only those that may cross a degraded threshold now are judged: a
    # message waiting longer than allowed, a delivery slower than the p95 limit or enough connects
    # in the window (a restart storm's single reconnect each is not read every sweep).
    cfg = settings.CAISEY
    reachable = ~Q(endpoint__presence_announced=Presence.OFFLINE)
    ids.update(
        OutboxMessage.objects.filter(
            reachable
            & (
                Q(status=OutboxStatus.QUEUED, created_at__lt=now - timedelta(seconds=cfg["DEGRADED_OLDEST_UNACKED_S"]))
                | Q(acked_at__gte=window_start, latency_ms__gt=cfg["DEGRADED_P95_LATENCY_MS"])
            )
        )
        .values_list("endpoint_id", flat=True)
        .distinct()
    )
    ids.update(
        AgentConnection.objects.filter(reachable & Q(opened_at__gte=window_start))
        .values("endpoint_id")
        .annotate(n=Count("id"))
        .filter(n__gte=cfg["DEGRADED_RECONNECTS"])
        .values_list("endpoint_id", flat=True)
    )
    return ids


def _sweep(now: datetime) -> int:
    ids = _candidates(now)
    if not ids:
        return 0
    figures = health.health_for(ids, now)
    changed = 0
    for endpoint in Endpoint.objects.filter(pk__in=ids):
        current = health.connectivity_of(endpoint, figures[endpoint.pk], now)
        if _same(endpoint, current):
            continue
        with tenancy.bind(endpoint.tenant_id), transaction.atomic():
            # Conditional on what this sweep read: an event recorded meanwhile is newer and stays.
            if endpoint_presence_record(
                endpoint=endpoint, presence=current.state, reason=current.reason, since=current.since
            ):
                presence_announce(endpoint=endpoint, connectivity=current, recorded=True)
                changed += 1
    return changed
