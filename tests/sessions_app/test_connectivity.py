"""Connectivity periods land in the session record: degraded, offline, and back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from bridge.models import OutboxMessage
from endpoints.models import Endpoint
from sessions_app.models import TranscriptEntry
from sessions_app.services import sessions
from sessions_app.services.connectivity import session_connectivity_sweep
from sessions_app.services.transcript import transcript_verify
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def seen(endpoint, ago: timedelta = timedelta(0)) -> None:
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now() - ago)


def periods(session) -> list[tuple]:
    return [
        (e.data["from"], e.data["to"])
        for e in TranscriptEntry.all_tenants.filter(session=session, kind="bridge.connectivity").order_by("index")
    ]


def test_degraded_offline_and_back_are_each_recorded_once_in_every_open_session():
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    seen(endpoint)
    tech = factories.technician(tenant)
    session = sessions.session_open(actor=tech, endpoint=endpoint, reason="ERP down")
    other = sessions.session_open(actor=factories.technician(tenant), endpoint=endpoint, reason="second pair of eyes")
    closed = sessions.session_open(actor=tech, endpoint=endpoint, reason="done already")
    sessions.session_close(actor=tech, session=closed)
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(
        heartbeat_interval=10, cadence_applied_at=timezone.now()
    )  # the agent applied the wake
    assert session_connectivity_sweep() == 0  # working path: nothing to say

    # The agent stops acknowledging: its oldest message waits past the threshold.
    OutboxMessage.all_tenants.filter(endpoint=endpoint).update(created_at=timezone.now() - timedelta(minutes=5))
    assert session_connectivity_sweep() == 2
    assert session_connectivity_sweep() == 0  # still degraded: one entry per period
    entry = TranscriptEntry.all_tenants.get(session=session, kind="bridge.connectivity")
    assert entry.actor == "bridge" and entry.data["to"] == "degraded"
    assert any("oldest unacknowledged" in why for why in entry.data["why"]) and entry.data["queue_depth"] >= 1

    seen(endpoint, ago=timedelta(minutes=10))  # heartbeats stopped
    assert session_connectivity_sweep() == 2
    OutboxMessage.all_tenants.filter(endpoint=endpoint).update(status="acked", acked_at=timezone.now(), latency_ms=5)
    seen(endpoint)  # back, and the queue drained
    assert session_connectivity_sweep() == 2

    for s in (session, other):
        recorded = periods(s)
        assert [to for _, to in recorded] == ["degraded", "offline", "active"]
        assert recorded[0][0] in ("lazy", "active", "waking")  # as the opening entry stated it
        assert [frm for frm, _ in recorded[1:]] == ["degraded", "offline"]
        assert transcript_verify(session_id=s.pk)[0]  # appended to the hash chain like any entry
    assert periods(closed) == []
