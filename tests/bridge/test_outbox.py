"""The durable outbox: persist before send, ack ends it, retries and budgets, resend."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from bridge import outbox, registry
from bridge.models import OutboxMessage, OutboxStatus
from caisey import tenancy
from caisey.actors import Party
from caisey_agent import protocol as p
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def enrolled(db):
    return factories.endpoint(factories.client_group(factories.tenant()))


def enqueue(endpoint, mode="active", **kwargs) -> OutboxMessage:
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():  # as the service that queues it
        return outbox.outbox_enqueue(endpoint=endpoint, body=p.ModeSet(mode=mode, heartbeat_interval=10), **kwargs)


def reload(message) -> OutboxMessage:
    return OutboxMessage.all_tenants.get(pk=message.pk)


async def connected_agent(enrolled) -> FakeAgent:
    agent = FakeAgent()
    await agent.connect()
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    assert (await agent.recv()).type == "ack"
    return agent


@pytest.mark.asyncio
async def test_message_is_delivered_and_done_only_on_ack(enrolled):
    agent = await connected_agent(enrolled)
    message = await database_sync_to_async(enqueue)(enrolled.endpoint)
    frame = await agent.recv()
    assert frame.type == "mode.set" and frame.id == message.pk
    row = await database_sync_to_async(reload)(message)
    assert row.status == OutboxStatus.QUEUED and row.attempts == 1
    await agent.send(p.Ack(ref=frame.id))
    await agent.send(p.Heartbeat(interval=60))  # a frame after the ack: the ack has been processed
    await agent.recv()
    row = await database_sync_to_async(reload)(message)
    assert row.status == OutboxStatus.ACKED and row.latency_ms is not None and row.acked_at
    # A second ack of the same id changes nothing.
    await agent.send(p.Ack(ref=frame.id))
    await agent.send(p.Heartbeat(interval=60))
    await agent.recv()
    assert (await database_sync_to_async(reload)(message)).acked_at == row.acked_at
    await agent.close()


@pytest.mark.asyncio
async def test_reconnecting_agent_gets_everything_queued_oldest_first(enrolled):
    first = await database_sync_to_async(enqueue)(enrolled.endpoint, mode="active")
    second = await database_sync_to_async(enqueue)(enrolled.endpoint, mode="lazy")
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()  # ack of hello
    ids = [(await agent.recv()).id, (await agent.recv()).id]
    assert ids == [first.pk, second.pk]
    await agent.close()


@pytest.mark.asyncio
async def test_an_agent_cannot_ack_another_endpoints_message(enrolled):
    other = await database_sync_to_async(lambda: factories.endpoint(factories.client_group(factories.tenant())))()
    theirs = await database_sync_to_async(enqueue)(other.endpoint)
    agent = await connected_agent(enrolled)
    await agent.send(p.Ack(ref=theirs.pk))
    await agent.send(p.Heartbeat(interval=60))
    await agent.recv()
    assert (await database_sync_to_async(reload)(theirs)).status == OutboxStatus.QUEUED
    await agent.close()


def test_unreachable_endpoint_uses_up_its_budget_then_fails_visibly(enrolled, settings, monkeypatch):
    settings.CAISEY = {**settings.CAISEY, "OUTBOX_RETRY": {"default": {"max_attempts": 3, "base_s": 1, "cap_s": 2}}}
    failures = []
    monkeypatch.setitem(registry._failed, "test", lambda message: failures.append(message.pk))
    message = enqueue(enrolled.endpoint, ref_type="test")
    for _ in range(4):
        OutboxMessage.all_tenants.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        outbox.outbox_sweep()
    row = reload(message)
    assert row.status == OutboxStatus.FAILED_TO_DELIVER
    assert row.attempts == 3
    assert row.last_error == "endpoint offline"
    assert failures == [message.pk]
    # Nothing is deleted: the row stays, with its attempts, and an explicit resend queues it again.
    with tenancy.bind(enrolled.endpoint.tenant_id):
        outbox.outbox_resend(actor=Party.SYSTEM, message=row)
    row = reload(message)
    assert row.status == OutboxStatus.QUEUED and row.max_attempts == 6 and row.id == message.pk


def test_expired_message_fails_instead_of_disappearing(enrolled):
    message = enqueue(enrolled.endpoint, expires_at=timezone.now() - timedelta(seconds=1))
    outbox.outbox_sweep()
    row = reload(message)
    assert row.status == OutboxStatus.FAILED_TO_DELIVER
    assert "expired" in row.last_error


def test_enqueue_refuses_agent_to_server_types(enrolled):
    with pytest.raises(ValueError):
        outbox.outbox_enqueue(endpoint=enrolled.endpoint, body=p.Heartbeat(interval=5))


def test_backoff_is_capped_and_jittered(settings):
    settings.CAISEY = {**settings.CAISEY, "OUTBOX_RETRY": {"default": {"max_attempts": 3, "base_s": 2, "cap_s": 30}}}
    delays = [outbox.backoff("x", n).total_seconds() for n in range(1, 12) for _ in range(20)]
    assert max(delays) <= 30 and min(delays) >= 1
    assert len({round(d, 3) for d in delays}) > 50  # jittered, not a fixed schedule


def test_a_claim_for_many_endpoints_takes_each_ones_due_rows_once_in_order(db):
    group = factories.client_group(factories.tenant())
    first, second, third = (factories.endpoint(group) for _ in range(3))
    a1, a2 = enqueue(first.endpoint), enqueue(first.endpoint, mode="lazy")
    b1 = enqueue(second.endpoint)
    held = enqueue(third.endpoint, not_before=timezone.now() + timedelta(hours=1))
    frames = outbox.outbox_claim_many(
        requests=[(first.endpoint.pk, True), (second.endpoint.pk, True), (third.endpoint.pk, True)]
    )
    assert set(frames) == {first.endpoint.pk, second.endpoint.pk}  # keyed by the ids asked for
    assert [p.decode(f, accept=p.SERVER_TO_AGENT).id for f in frames[first.endpoint.pk]] == [a1.pk, a2.pk]
    assert [p.decode(f, accept=p.SERVER_TO_AGENT).id for f in frames[second.endpoint.pk]] == [b1.pk]
    assert reload(a1).attempts == reload(b1).attempts == 1 and reload(held).attempts == 0
    # Claimed rows wait for their ack: nothing is due again; the hello's claim (not due only) takes all.
    assert outbox.outbox_claim_many(requests=[(first.endpoint.pk, True), (second.endpoint.pk, True)]) == {}
    again = outbox.outbox_claim_many(requests=[(third.endpoint.pk, False), (second.endpoint.pk, False)])
    assert set(again) == {third.endpoint.pk, second.endpoint.pk} and reload(held).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_enqueue_many_refuses_a_row_for_another_tenants_endpoint_and_writes_none():
    """Was: ``outbox_enqueue_many`` wrote its rows with the raw ``insert_rows``, dropping the
    per-row tenant check its docstring promises (``bulk_create`` through the scoped manager made it)."""
    ours = factories.endpoint(factories.client_group(factories.tenant("Ours"))).endpoint
    theirs = factories.endpoint(factories.client_group(factories.tenant("Theirs"))).endpoint
    with tenancy.bind(ours.tenant_id), pytest.raises(tenancy.TenantMismatch), transaction.atomic():
        outbox.outbox_enqueue_many(
            messages=[
                {"endpoint": ours, "body": p.ModeSet(mode="active", heartbeat_interval=10.0)},
                {"endpoint": theirs, "body": p.ModeSet(mode="active", heartbeat_interval=10.0)},
            ]
        )
    assert not OutboxMessage.all_tenants.exists()
