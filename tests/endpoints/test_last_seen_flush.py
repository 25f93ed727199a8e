"""Coalesced last-seen flushes (endpoints.services.endpoint_touch_many) with several server processes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from bridge import health
from caisey import tenancy
from endpoints import services
from endpoints.models import Endpoint, Presence
from endpoints.presence import presence_of
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_late_flush_from_another_process_never_moves_last_seen_backwards():
    """Process A buffered a beat at t1, then the agent's socket there closed (disconnect recorded at
    t2) and the agent reconnected to process B (last seen t3). A's flush, late, must not write t1
    back: last seen would fall before the disconnect, and the connected endpoint would read offline."""
    enrolled = factories.endpoint(factories.client_group(factories.tenant()))
    pk = enrolled.endpoint.pk
    t3 = timezone.now()
    t1, t2 = t3 - timedelta(seconds=2), t3 - timedelta(seconds=1)
    Endpoint.all_tenants.filter(pk=pk).update(
        connection_id="b", connected_at=t3, last_seen_at=t3, disconnected_at=t2, heartbeat_interval=60
    )
    with tenancy.system():
        services.endpoint_touch_many(seen={pk: t1})  # A's late flush
        endpoint = Endpoint.objects.get(pk=pk)
    assert endpoint.last_seen_at == t3
    assert presence_of(endpoint, t3) != Presence.OFFLINE
    assert health.connectivity_of(endpoint, None, t3).state != Presence.OFFLINE
    # A newer beat still moves it forward, and a never-seen endpoint gets its first.
    t4 = t3 + timedelta(seconds=1)
    other = factories.endpoint(factories.client_group(factories.tenant())).endpoint
    with tenancy.system():
        services.endpoint_touch_many(seen={pk: t4, other.pk: t4})
        assert Endpoint.objects.get(pk=pk).last_seen_at == t4
        assert Endpoint.objects.get(pk=other.pk).last_seen_at == t4
