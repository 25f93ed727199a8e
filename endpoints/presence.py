"""Presence is derived from the last heartbeat, never a flag that can get stuck."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from endpoints.models import Endpoint, EndpointStatus, Presence


def offline_after(interval: float) -> timedelta:
    cfg = settings.CAISEY
    return timedelta(seconds=interval * cfg["PRESENCE_MISSED_BEATS"] + cfg["PRESENCE_GRACE_S"])


def presence_of(endpoint: Endpoint, now: datetime | None = None) -> Presence:
    now = now or timezone.now()
    if endpoint.status == EndpointStatus.REVOKED or endpoint.last_seen_at is None:
        return Presence.OFFLINE
    if endpoint.disconnected_at and endpoint.disconnected_at >= endpoint.last_seen_at:
        return Presence.OFFLINE
    if now - endpoint.last_seen_at > offline_after(endpoint.heartbeat_interval):
        return Presence.OFFLINE
    return Presence(endpoint.mode)
