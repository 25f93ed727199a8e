"""Announce every change of an endpoint's connectivity that no event announced: heartbeats that
stopped without a clean disconnect (a killed agent, a sleeping laptop, a dead Daphne process), and
a path that became degraded or recovered. Only rows that may have changed are read."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from bridge import health
from bridge.models import OutboxMessage, OutboxStatus
from bridge.services import connectivity_unchanged, presence_announce
from caisey import tenancy
from endpoints.models import Endpoint, Presence
from endpoints.presence import offline_after
from endpoints.services import endpoint_presence_record


def run() -> int:
    """A sweep over every tenant (named: ``tenancy.system()``); each change is recorded in its
    endpoint's tenant by endpoints' service, and announced after its commit."""
    with tenancy.system():
        return _sweep(timezone.now())


def _candidates(now: datetime) -> set:
    """Endpoints whose connectivity may differ from what was announced: heartbeats overdue or
    resumed, announced degraded or waking (they may recover), or a message left waiting."""
    shortest = min(settings.CAISEY["HEARTBEAT_ACTIVE_S"], settings.CAISEY["HEARTBEAT_LAZY_S"])
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
    # itself; a slow acknowledgement and one connect too many are judged when they happen
    # (bridge.services). What no event marks is a message left waiting: those endpoints are judged
    # here (queued messages are the outbox's small working set; its index leads with the status).
    ids.update(
        OutboxMessage.objects.filter(
            ~Q(endpoint__presence_announced=Presence.OFFLINE),
            status=OutboxStatus.QUEUED,
            created_at__lt=now - timedelta(seconds=settings.CAISEY["DEGRADED_OLDEST_UNACKED_S"]),
        )
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
        if connectivity_unchanged(endpoint, current):
            continue
        with tenancy.bind(endpoint.tenant_id), transaction.atomic():
            # Conditional on what this sweep read: an event recorded meanwhile is newer and stays.
            previous = endpoint.presence_announced
            if endpoint_presence_record(
                endpoint=endpoint, presence=current.state, reason=current.reason, since=current.since
            ):
                presence_announce(endpoint=endpoint, connectivity=current, recorded=True, previous=previous)
                changed += 1
    return changed
