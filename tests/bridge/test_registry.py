"""bridge.registry: the one way to plug into the bridge. Delivered and failed outbox rows go to
the handler registered for their ref_type, in the transaction that ended them, in their tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from bridge import outbox, registry
from bridge.models import OutboxMessage, OutboxStatus
from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def endpoint():
    return factories.endpoint(factories.client_group(factories.tenant())).endpoint


@pytest.fixture
def seen(monkeypatch):
    calls = []

    def handler(kind):
        def record(message):
            calls.append((kind, message.pk, tenancy.current_tenant_id(), transaction.get_connection().in_atomic_block))

        return record

    monkeypatch.setitem(registry._delivered, "thing", handler("delivered"))
    monkeypatch.setitem(registry._failed, "thing", handler("failed"))
    return calls


def enqueue(endpoint, ref_type="thing", **kwargs) -> OutboxMessage:
    return outbox.outbox_enqueue(
        endpoint=endpoint, body=p.ModeSet(mode="lazy", heartbeat_interval=60), ref_type=ref_type, **kwargs
    )


def test_an_acknowledged_row_goes_to_its_delivered_handler_in_its_tenant(endpoint, seen):
    message = enqueue(endpoint)
    assert outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message.pk) is not None
    assert seen == [("delivered", message.pk, endpoint.tenant_id, True)]
    # A second ack is a duplicate: the handler is not called again.
    assert outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message.pk) is None
    assert len(seen) == 1


def test_a_row_given_up_on_goes_to_its_failed_handler_in_its_tenant(endpoint, seen):
    message = enqueue(endpoint, expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox.outbox_sweep()["failed"] == 1
    assert seen == [("failed", message.pk, endpoint.tenant_id, True)]
    assert OutboxMessage.all_tenants.get(pk=message.pk).status == OutboxStatus.FAILED_TO_DELIVER


def test_rows_of_other_ref_types_do_not_reach_the_handler(endpoint, seen):
    message = enqueue(endpoint, ref_type="")
    outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message.pk)
    assert seen == []


def test_a_second_handler_for_the_same_ref_type_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_delivered", {})

    @registry.on_delivered("x")
    def first(message):
        pass

    assert registry.on_delivered("x")(first) is first  # registering the same function again is harmless
    with pytest.raises(RuntimeError, match="already registered"):

        @registry.on_delivered("x")
        def second(message):
            pass


def test_sessions_app_and_the_bridge_register_through_the_decorators():
    assert registry.delivered_handler("action") and registry.failed_handler("action")
    assert registry.delivered_handler("prompt") and registry.failed_handler("prompt")
    assert registry.delivered_handler("mode") is not None


def test_an_acknowledged_mode_set_records_the_new_cadence(endpoint, settings):
    """The bridge's own ``mode`` handler: endpoints' service records the interval the agent now beats at."""
    from bridge.services import endpoint_set_mode

    assert endpoint_set_mode(endpoint=endpoint, mode="active", reason="test")
    assert not endpoint_set_mode(endpoint=endpoint, mode="active", reason="again")  # already active
    row = Endpoint.all_tenants.get(pk=endpoint.pk)
    assert row.mode == "active" and row.heartbeat_interval == 60.0  # not applied until the agent acks
    message = OutboxMessage.all_tenants.get(endpoint=endpoint, ref_type="mode")
    outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message.pk)
    assert Endpoint.all_tenants.get(pk=endpoint.pk).heartbeat_interval == settings.CAISEY["HEARTBEAT_ACTIVE_S"]
