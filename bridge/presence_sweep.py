"""Announce every change of an endpoint's connectivity that no event announced: heartbeats that
stopped without a clean disconnect (a killed agent, a sleeping laptop, a dead Daphne process), and
a path that became degraded or recovered. Only rows that may have changed are read."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
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
    """Endpoints whose connectivity may differ from what was announced: heartbeats overdue, or a
    path whose degraded judgement may change (announced degraded or waking, messages waiting,
    deliveries or connects within the degraded window)."""
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
    # Otherwise an endpoint announced offline comes back only through a connect, which announces itself.
    reachable = ~Q(endpoint__presence_announced=Presence.OFFLINE)
    ids.update(
        OutboxMessage.objects.filter(reachable & (Q(status=OutboxStatus.QUEUED) | Q(acked_at__gte=window_start)))
        .values_list("endpoint_id", flat=True)
        .distinct()
    )
    ids.update(
        AgentConnection.objects.filter(reachable & Q(opened_at__gte=window_start))
        .values_list("endpoint_id", flat=True)
        .distinct()
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
