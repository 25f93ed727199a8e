"""Presence is derived from the last heartbeat, never a flag that can get stuck.

A mode change moves the cadence the server expects, but only once the agent answers at the new
one (its acknowledgement of the ``mode.set``, ``Endpoint.cadence_applied_at``). Until then the
endpoint is waking, and judged on the deadline of the cadence it still beats at: a lazy endpoint
last seen 45 s ago is waking when woken, not offline because 45 s is more than three active beats.
The answer is a sign of life written at once (``endpoint_interval_record``), so the new cadence's
deadline counts from it, not from the last lazy beat while the coalesced last-seen flush is pending.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from endpoints.models import AgentMode, Endpoint, EndpointStatus, Presence


def offline_after(interval: float) -> timedelta:
    cfg = settings.CAISEY
    return timedelta(seconds=interval * cfg["PRESENCE_MISSED_BEATS"] + cfg["PRESENCE_GRACE_S"])


def waking(endpoint: Endpoint) -> bool:
    """Asked to wake, and the agent has not answered at the active cadence since."""
    if endpoint.mode != AgentMode.ACTIVE or endpoint.mode_changed_at is None:
        return False
    return endpoint.cadence_applied_at is None or endpoint.cadence_applied_at < endpoint.mode_changed_at


def offline_at(endpoint: Endpoint) -> datetime | None:
    """When the endpoint reads offline unless heard from again: the deadline of the cadence it
    beats at now (while waking, the old one, which ``heartbeat_interval`` holds until the answer)."""
    seen = endpoint.last_seen_at
    return seen + offline_after(endpoint.heartbeat_interval) if seen else None


def presence_of(endpoint: Endpoint, now: datetime | None = None) -> Presence:
    now = now or timezone.now()
    if endpoint.status == EndpointStatus.REVOKED or endpoint.last_seen_at is None:
        return Presence.OFFLINE
    if endpoint.disconnected_at and endpoint.disconnected_at >= endpoint.last_seen_at:
        return Presence.OFFLINE
    if now - endpoint.last_seen_at > offline_after(endpoint.heartbeat_interval):
        return Presence.OFFLINE
    if waking(endpoint):
        return Presence.WAKING
    return Presence(endpoint.mode)
