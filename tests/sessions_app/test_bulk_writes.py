"""A bulk run's writes: bulk inserts in a number of statements that does not grow with the
endpoints, the same records as one request per endpoint, one batch of doorbells, one console
event per run; and on PostgreSQL, no deadlock with the last-seen flush (issue 12, items 2 and 3)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bridge import notify
from bridge.models import OutboxMessage
from caisey import secrets, tenancy
from endpoints.models import AgentMode, ApprovalPolicy, ApprovalRequirement, Endpoint
from endpoints.services import endpoint_touch_many
from sessions_app.models import Action, ActionStatus, Prompt, SupportSession, TranscriptEntry, WakeChoice
from sessions_app.services import bulk
from sessions_app.services.transcript import transcript_verify
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _fleet(n: int, *, seen: bool = True):
    """A technician and ``n`` enrolled endpoints, bulk-created (as bench/driver.py seeds them)."""
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    now = timezone.now()
    rows = [
        Endpoint(
            tenant=tenant,
            client_group=group,
            hostname=f"fleet-{i:04d}",
            machine_id=f"fleet-{tenant.pk}-{i:04d}",
            credential_hash=secrets.digest(secrets.new_secret()),
            last_seen_at=now if seen and i % 3 else None,  # every third one never seen: offline
        )
        for i in range(n)
    ]
    Endpoint.all_tenants.bulk_create(rows)
    return factories.technician(tenant), list(Endpoint.all_tenants.filter(tenant=tenant).order_by("hostname"))


@pytest.fixture
def rung(monkeypatch):
    batches = []
    monkeypatch.setattr(notify, "_send_many", lambda items: batches.append(list(items)))
    return batches


def _start(tech, endpoints, **kwargs):
    return bulk.bulk_run_start(actor=tech, endpoints=endpoints, kind="system_summary", params={}, **kwargs)


def test_the_number_of_queries_does_not_grow_with_the_endpoints():
    # 5 and 20: both within one insert statement per table on SQLite (999 parameters a statement).
    tech, endpoints = _fleet(26)
    _start(tech, endpoints[:1])  # the technician's membership is read once, then cached on the user
    with CaptureQueriesContext(connection) as few:
        _start(tech, endpoints[1:6])
    with CaptureQueriesContext(connection) as many:
        _start(tech, endpoints[6:])
    assert len(few) == len(many)
    assert Action.all_tenants.filter(endpoint__in=endpoints, status=ActionStatus.QUEUED).count() == 26


def test_it_writes_what_one_request_per_endpoint_writes():
    tech, endpoints = _fleet(3)
    run = _start(tech, endpoints, reason="outage")
    for endpoint in endpoints:
        action = Action.all_tenants.select_related("session").get(bulk_run=run, endpoint=endpoint)
        session = action.session
        assert transcript_verify(session_id=session.pk) == (True, None, "")
        opened, queued = TranscriptEntry.all_tenants.filter(session=session).order_by("index")
        assert (opened.kind, queued.kind, queued.action_id) == ("session.opened", "action.queued", action.pk)
        assert session.transcript_length == 2 and session.reason == "bulk run: outage"
        assert opened.data["bridge"] == action.conditions_at_dispatch and opened.data["wake"] is True
        assert opened.data["offline"] == queued.data["offline"] == session.opened_offline
        assert Endpoint.all_tenants.get(pk=endpoint.pk).mode == AgentMode.ACTIVE
        messages = {m.kind: m for m in OutboxMessage.all_tenants.filter(endpoint=endpoint)}
        assert messages["mode.set"].body["mode"] == "active" and messages["mode.set"].ref_id == "session opened"
        run_message = messages["action.run"]
        assert (run_message.pk, run_message.ref_id) == (action.outbox_id, str(action.pk))
        # An offline endpoint's action waits for its return until the action's expiry.
        assert (run_message.max_attempts == 100_000) == session.opened_offline
    assert SupportSession.all_tenants.filter(actions__bulk_run=run, opened_offline=True).count() == 1


def test_an_endpoint_whose_policy_gates_the_action_gets_its_prompt_the_others_run():
    tech, endpoints = _fleet(3)
    with tenancy.bind(endpoints[0].tenant_id):
        ApprovalPolicy.objects.create(
            tenant_id=endpoints[0].tenant_id, endpoint=endpoints[1], requires=ApprovalRequirement.EVERYTHING
        )
    run = _start(tech, endpoints)
    held = Action.all_tenants.get(bulk_run=run, endpoint=endpoints[1])
    assert held.status == ActionStatus.AWAITING_APPROVAL and not held.outbox_id
    assert Prompt.all_tenants.filter(action=held).count() == 1
    assert transcript_verify(session_id=held.session_id)[0]
    others = Action.all_tenants.filter(bulk_run=run).exclude(pk=held.pk)
    assert all(a.status == ActionStatus.QUEUED and a.outbox_id for a in others)
    assert not OutboxMessage.all_tenants.filter(endpoint=endpoints[1], kind="action.run").exists()


def test_waiting_for_the_check_in_leaves_every_endpoint_resting():
    tech, endpoints = _fleet(3)
    run = _start(tech, endpoints, wake=WakeChoice.WAIT)
    assert not OutboxMessage.all_tenants.filter(endpoint__in=endpoints, kind="mode.set").exists()
    assert all(e.mode == AgentMode.LAZY for e in Endpoint.all_tenants.filter(pk__in=[e.pk for e in endpoints]))
    assert Action.all_tenants.filter(bulk_run=run, wake=WakeChoice.WAIT, status=ActionStatus.QUEUED).count() == 3


def test_one_batch_of_doorbells_one_per_endpoint_and_one_console_event_per_run(rung):
    tech, endpoints = _fleet(4)
    rung.clear()
    run = _start(tech, endpoints)
    assert len(rung) == 1
    groups = [group for group, _ in rung[0]]
    assert sorted(g for g in groups if g.startswith("agent.")) == sorted(f"agent.{e.pk}" for e in endpoints)
    events = [message for group, message in rung[0] if group.startswith("console.")]
    assert [e["event"] for e in events] == ["bulk.progress"]
    payload = events[0]["payload"]
    assert payload["bulk_run_id"] == str(run.pk) and payload["total"] == 4
    assert sorted(payload["woken"]) == sorted(str(e.pk) for e in endpoints)


@pytest.mark.skipif(
    connections["default"].vendor != "postgresql",
    reason="needs PostgreSQL (row locks, deadlock detection): runs in the PostgreSQL phase of .ci/run",
)
def test_a_bulk_run_over_hundreds_of_endpoints_completes_while_their_last_seen_is_flushed(caplog):
    tech, endpoints = _fleet(400)
    ids = [e.pk for e in endpoints]
    stop, errors, flushes = threading.Event(), [], []

    def flusher(part: list) -> None:
        # As bridge/last_seen.py flushes: autocommit, every tenant (system work).
        try:
            while not stop.is_set():
                started = time.monotonic()
                with tenancy.system():
                    endpoint_touch_many(seen={pk: timezone.now() for pk in part})
                flushes.append((started, time.monotonic()))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    # Two socket processes' flushes over overlapping halves of the fleet.
    threads = [threading.Thread(target=flusher, args=(part,)) for part in (ids[:300], ids[100:])]
    for thread in threads:
        thread.start()
    try:
        while len(flushes) < 4:  # both are flushing before the run starts
            time.sleep(0.01)
        began = time.monotonic()
        run = _start(tech, endpoints)
        ended = time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    # One lock order: no deadlock at all, on either side (with the flush in descending order
    # instead, both sides met "deadlock detected": the flushers failed, the run was retried).
    assert errors == []
    assert not [r for r in caplog.records if r.name == "caisey.transactions"]
    assert any(start < ended and end > began for start, end in flushes)  # they did meet
    actions = Action.all_tenants.filter(bulk_run=run)
    assert actions.count() == 400
    assert actions.filter(status=ActionStatus.QUEUED).exclude(outbox_id="").count() == 400
    assert OutboxMessage.all_tenants.filter(endpoint_id__in=ids, kind="action.run").count() == 400
    assert Endpoint.all_tenants.filter(pk__in=ids, mode=AgentMode.ACTIVE).count() == 400
