"""Announce endpoints whose heartbeats stopped without a clean disconnect (a killed agent,
a sleeping laptop, a dead Daphne process). Only rows that may have changed are read."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bridge.services import presence_announce
from endpoints.models import Endpoint, Presence
from endpoints.presence import offline_after, presence_of


def run() -> int:
    now = timezone.now()
    shortest = min(settings.CAISEY["HEARTBEAT_ACTIVE"], settings.CAISEY["HEARTBEAT_LAZY"])
    candidates = Endpoint.all_tenants.exclude(presence_announced=Presence.OFFLINE).filter(
        last_seen_at__lt=now - offline_after(shortest)
    )
    changed = 0
    for endpoint in candidates:
        presence = presence_of(endpoint, now)
        if presence == endpoint.presence_announced:
            continue
        with transaction.atomic():
            updated = Endpoint.all_tenants.filter(
                pk=endpoint.pk, presence_announced=endpoint.presence_announced
            ).update(presence_announced=presence)
            if updated:
                endpoint.presence_announced = presence
                presence_announce(endpoint=endpoint)
                changed += 1
    return changed
