"""The socket process's group commit (bridge/batcher.py): many sockets' frames per transaction,
each isolated, nothing kept of a batch that did not commit."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, transaction

from bridge import batcher, metrics, outbox, services
from bridge.models import InboundReceipt, OutboxMessage, OutboxStatus
from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def three(db):
    group = factories.client_group(factories.tenant())
    return [factories.endpoint(group) for _ in range(3)]


def output_frame(action_id: str = "00000000-0000-0000-0000-000000000000") -> p.Envelope:
    body = p.ActionOutput(action_id=action_id, seq=1, stream="stdout", data="x")
    return p.decode(p.encode(p.envelope(body)), accept=p.AGENT_TO_SERVER)


def queued(endpoint) -> OutboxMessage:
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():
        return outbox.outbox_enqueue(endpoint=endpoint, body=p.ModeSet(mode="active", heartbeat_interval=10))


def test_one_bad_unit_fails_alone_and_keeps_nothing_the_others_are_applied(three, monkeypatch):
    a, b, c = (e.endpoint for e in three)
    message = queued(a)
    outbox.outbox_claim(endpoint_id=a.pk)
    original = services.agent_prompts_report

    def writes_then_fails(*, endpoint, reports):
        services.agent_context_record(endpoint=endpoint, machine={"hostname": "half-written"})
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "agent_prompts_report", writes_then_fails)
    frame = output_frame()
    outcomes = batcher.apply_batch(
        [
            batcher.Unit.ack(endpoint_id=a.pk, message_id=message.pk),
            batcher.Unit.prompts(endpoint=b, reports=[]),
            batcher.Unit.frame(endpoint=c, envelope=frame),
            batcher.Unit.context(endpoint=c, machine={"hostname": "kept"}),
        ]
    )
    monkeypatch.setattr(services, "agent_prompts_report", original)
    assert outcomes[0] is None and isinstance(outcomes[1], RuntimeError)
    assert outcomes[2] is True and outcomes[3] is None
    assert OutboxMessage.all_tenants.get(pk=message.pk).status == OutboxStatus.ACKED
    assert Endpoint.all_tenants.get(pk=b.pk).machine_context.get("hostname") != "half-written"
    assert Endpoint.all_tenants.get(pk=c.pk).machine_context["hostname"] == "kept"
    # The frame's receipt was kept: the same frame again is a duplicate (exactly once).
    assert InboundReceipt.all_tenants.filter(message_id=frame.id).count() == 1
    assert batcher.apply_batch([batcher.Unit.frame(endpoint=c, envelope=frame)]) == [False]


def test_a_batch_that_does_not_commit_keeps_nothing_and_fails_every_unit(three, monkeypatch):
    a, b, _ = (e.endpoint for e in three)
    message = queued(a)
    outbox.outbox_claim(endpoint_id=a.pk)
    frame = output_frame()

    def commit_fails(units, outcomes):
        raise RuntimeError("disk full")  # step 4 runs inside the batch's transaction: as a failed commit

    monkeypatch.setattr(batcher, "_claim", commit_fails)
    outcomes = batcher.apply_batch(
        [batcher.Unit.ack(endpoint_id=a.pk, message_id=message.pk), batcher.Unit.frame(endpoint=b, envelope=frame)]
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert OutboxMessage.all_tenants.get(pk=message.pk).status == OutboxStatus.QUEUED  # the agent acks again
    assert not InboundReceipt.all_tenants.filter(message_id=frame.id).exists()  # the agent sends it again


def test_a_hello_of_a_batch_gets_what_waits_for_its_endpoint_and_a_doorbell_claims_what_is_due(three):
    a, b, _ = three
    waiting = queued(a.endpoint)
    due = queued(b.endpoint)
    hello = p.Hello(endpoint_id=str(a.endpoint.pk), credential=a.credential, agent_version="t", machine={}, prompts=[])
    refused = p.Hello(endpoint_id=str(b.endpoint.pk), credential="wrong", agent_version="t", machine={}, prompts=[])
    outcomes = batcher.apply_batch(
        [
            batcher.Unit.hello(hello=hello, connection_id="c1", remote_ip="127.0.0.1"),
            batcher.Unit.hello(hello=refused, connection_id="c2", remote_ip="127.0.0.1"),
            batcher.Unit.deliver(endpoint_id=b.endpoint.pk),
        ]
    )
    assert [p.decode(f, accept=p.SERVER_TO_AGENT).id for f in outcomes[0].frames] == [waiting.pk]
    assert isinstance(outcomes[1], services.HandshakeRefused)
    assert [p.decode(f, accept=p.SERVER_TO_AGENT).id for f in outcomes[2]] == [due.pk]


@pytest.mark.asyncio
async def test_units_submitted_together_share_one_transaction(three):
    endpoints = [e.endpoint for e in three]
    before = metrics.batches._value.get()
    await asyncio.gather(
        *(
            batcher.submit(batcher.Unit.context(endpoint=e, machine={"hostname": f"h{i}"}))
            for i, e in enumerate(endpoints)
        )
    )
    assert metrics.batches._value.get() - before == 1

    def hostnames():
        return sorted(
            Endpoint.all_tenants.filter(pk__in=[e.pk for e in endpoints]).values_list(
                "machine_context__hostname", flat=True
            )
        )

    assert await database_sync_to_async(hostnames)() == ["h0", "h1", "h2"]


class _Deadlock(Exception):
    sqlstate = "40P01"  # as psycopg's DeadlockDetected carries it


def _deadlock() -> OperationalError:
    error = OperationalError("deadlock detected")
    error.__cause__ = _Deadlock()
    return error


@pytest.mark.asyncio
async def test_a_unit_aborted_by_a_deadlock_is_applied_in_the_next_batch_not_answered_with_an_error(three, monkeypatch):
    a, b, _ = (e.endpoint for e in three)
    original = services.agent_context_record
    calls = []

    def deadlocks_once(*, endpoint, machine):
        calls.append(endpoint.pk)
        if endpoint.pk == a.pk and calls.count(a.pk) == 1:
            original(endpoint=endpoint, machine={"hostname": "rolled back"})
            raise _deadlock()
        return original(endpoint=endpoint, machine=machine)

    monkeypatch.setattr(services, "agent_context_record", deadlocks_once)
    before = metrics.batches._value.get()
    await asyncio.gather(
        batcher.submit(batcher.Unit.context(endpoint=a, machine={"hostname": "a"})),
        batcher.submit(batcher.Unit.context(endpoint=b, machine={"hostname": "b"})),
    )
    assert calls == [a.pk, b.pk, a.pk]
    assert metrics.batches._value.get() - before == 2  # the second batch held the unit applied again

    def hostname(pk):
        return Endpoint.all_tenants.get(pk=pk).machine_context["hostname"]

    assert await database_sync_to_async(hostname)(a.pk) == "a"
    assert await database_sync_to_async(hostname)(b.pk) == "b"


@pytest.mark.asyncio
async def test_a_unit_that_keeps_meeting_deadlocks_is_answered_with_the_error_after_its_retries(three, monkeypatch):
    a = three[0].endpoint
    calls = []

    def always(*, endpoint, machine):
        calls.append(endpoint.pk)
        raise _deadlock()

    monkeypatch.setattr(services, "agent_context_record", always)
    with pytest.raises(OperationalError):
        await batcher.submit(batcher.Unit.context(endpoint=a, machine={"hostname": "a"}))
    assert len(calls) == batcher.RETRIES + 1
