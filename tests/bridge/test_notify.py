"""Doorbells ring after commit, together, and never for work that was rolled back."""

from __future__ import annotations

import pytest
from django.db import transaction

from bridge import notify

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rung(monkeypatch):
    batches = []
    monkeypatch.setattr(notify, "_send_many", lambda items: batches.append(list(items)))
    return batches


def test_one_transactions_doorbells_ring_once_together_after_commit(rung):
    with transaction.atomic():
        notify.agent_doorbell(endpoint_id="e1", reason="queued")
        notify.console_event(tenant_id="t1", endpoint_id="e1", event="x", payload={"n": 1})
        notify.agent_doorbell(endpoint_id="e2", reason="queued")
        assert rung == []
    assert len(rung) == 1
    assert [group for group, _ in rung[0]] == ["agent.e1", "console.tenant.t1", "console.endpoint.e1", "agent.e2"]


def test_a_rolled_back_savepoint_rings_nothing_of_its_own(rung):
    with transaction.atomic():
        notify.agent_doorbell(endpoint_id="kept", reason="queued")
        try:
            with transaction.atomic():
                notify.agent_doorbell(endpoint_id="undone", reason="queued")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        notify.agent_doorbell(endpoint_id="kept-too", reason="queued")
    groups = [group for batch in rung for group, _ in batch]
    assert groups == ["agent.kept", "agent.kept-too"]


def test_a_rolled_back_transaction_rings_nothing(rung):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            notify.agent_doorbell(endpoint_id="e1", reason="queued")
            raise RuntimeError("rolled back")
    assert rung == []


def test_after_a_rolled_back_transaction_the_next_one_rings_its_own(rung):
    """The rolled-back transaction's batch is gone: the next transaction does not append to it."""
    with pytest.raises(RuntimeError), transaction.atomic():
        notify.agent_doorbell(endpoint_id="undone", reason="queued")
        raise RuntimeError("rolled back")
    with transaction.atomic():
        notify.agent_doorbell(endpoint_id="next", reason="queued")
    assert [[group for group, _ in batch] for batch in rung] == [["agent.next"]]


def test_a_rolled_back_savepoint_alone_drops_only_its_own_and_order_is_kept(rung):
    with transaction.atomic():
        notify.agent_doorbell(endpoint_id="1", reason="queued")
        with transaction.atomic():  # released: its doorbells ring with the transaction
            notify.agent_doorbell(endpoint_id="2", reason="queued")
        notify.agent_doorbell(endpoint_id="3", reason="queued")
        with pytest.raises(RuntimeError), transaction.atomic():
            notify.agent_doorbell(endpoint_id="undone", reason="queued")
            raise RuntimeError("rolled back")
        with transaction.atomic():  # a new savepoint after the rolled-back one
            notify.agent_doorbell(endpoint_id="4", reason="queued")
        notify.agent_doorbell(endpoint_id="5", reason="queued")
        assert rung == []
    assert [group for batch in rung for group, _ in batch] == ["agent.1", "agent.2", "agent.3", "agent.4", "agent.5"]


def test_rollbacks_leave_nothing_behind(rung):
    """No memory kept for rolled-back work: the collector holds one weak reference per database."""
    import gc
    import weakref

    batches = []
    for n in range(50):
        with pytest.raises(RuntimeError), transaction.atomic():
            notify.agent_doorbell(endpoint_id=str(n), reason="queued")
            batches.append(weakref.ref(notify._open.last["default"]()))
            raise RuntimeError("rolled back")
    gc.collect()
    assert [ref for ref in batches if ref() is not None] == []
    assert len(notify._open.last) == 1 and notify._open.last["default"]() is None
    assert rung == []


def test_outside_a_transaction_it_rings_at_once(rung):
    notify.agent_doorbell(endpoint_id="e1", reason="queued")
    assert rung == [[("agent.e1", {"type": "agent.doorbell", "reason": "queued"})]]


@pytest.mark.asyncio
async def test_in_a_server_process_doorbells_from_its_sync_thread_are_handed_to_its_loop():
    """The thread that rings does not wait for Redis; the loop's one sender keeps each group's order."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("agent.loop-test", channel)
    notify.attach_to_running_loop()
    try:

        def ring_in_sync_thread() -> None:
            for n in range(5):
                with transaction.atomic():
                    notify.agent_doorbell(endpoint_id="loop-test", reason=str(n))

        await sync_to_async(ring_in_sync_thread)()
        received = [(await layer.receive(channel))["reason"] for _ in range(5)]
        assert received == ["0", "1", "2", "3", "4"]
    finally:
        await layer.group_discard("agent.loop-test", channel)
        notify._server.task.cancel()


def test_an_agents_doorbell_rung_twice_in_one_batch_rings_once(rung):
    with transaction.atomic():
        notify.agent_doorbell(endpoint_id="e1", reason="queued")
        notify.agent_doorbell(endpoint_id="e2", reason="queued")
        notify.agent_doorbell(endpoint_id="e1", reason="queued")
    assert [group for group, _ in rung[0]] == ["agent.e1", "agent.e2"]
