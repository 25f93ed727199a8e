"""Announce endpoints whose heartbeats stopped without a clean disconnect (a killed agent,
a sleeping laptop, a dead Daphne process). Only rows that may have changed are read."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bridge.services import presence_announce
from caisey import tenancy
from endpoints.models import Endpoint, Presence
from endpoints.presence import offline_after, presence_of
from endpoints.services import endpoint_presence_record


def run() -> int:
    """A sweep over every tenant (named: ``tenancy.system()``); each change is recorded in its
    endpoint's tenant by endpoints' service, and announced after its commit."""
    with tenancy.system():
        return _sweep(timezone.now())


def _sweep(now) -> int:
    shortest = min(settings.CAISEY["HEARTBEAT_ACTIVE_S"], settings.CAISEY["HEARTBEAT_LAZY_S"])
    candidates = Endpoint.objects.exclude(presence_announced=Presence.OFFLINE).filter(
        last_seen_at__lt=now - offline_after(shortest)
    )
    changed = 0
    for endpoint in candidates:
        presence = presence_of(endpoint, now)
        if presence == endpoint.presence_announced:
            continue
        with tenancy.bind(endpoint.tenant_id), transaction.atomic():
            if endpoint_presence_record(endpoint=endpoint, presence=presence):
                presence_announce(endpoint=endpoint)
                changed += 1
    return changed
