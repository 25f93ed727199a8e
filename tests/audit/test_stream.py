"""The audit journal and its delivery: every transcript entry and security event of a tenant
reaches each of its sinks, in order, with no gap whatever the order of commits, at least once,
resuming after a failure or a restart; one tenant's records never reach another's sink."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit import delivery
from audit.journal import journal_sequence
from audit.models import AuditRecord, AuditSink
from audit.selectors import sinks_status
from caisey import tenancy
from caisey.actors import Party
from endpoints.models import Role, SecurityEventKind
from endpoints.security_log import security_event_record
from sessions_app.kinds import TranscriptKind
from sessions_app.models import TranscriptEntry
from sessions_app.services.transcript import transcript_append
from tests import factories
from tests.audit.receivers import SyslogReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = SyslogReceiver()
    yield r
    r.stop()


def _received_ids(receiver: SyslogReceiver) -> list[str]:
    return [json.loads(f.split(b"] ", 1)[1])["event_id"] for f in receiver.frames]


def _journal_ids(tenant_id) -> list[str]:
    with tenancy.bind(tenant_id):
        return [str(e) for e in AuditRecord.objects.order_by("seq").values_list("event_id", flat=True)]


def _world():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    endpoint = factories.endpoint(group).endpoint
    session = factories.support_session(endpoint)
    return tenant, endpoint, session


def test_every_transcript_entry_and_security_event_is_journaled_in_its_transaction():
    tenant, endpoint, session = _world()
    with tenancy.bind(tenant.pk):
        entries = list(TranscriptEntry.objects.filter(session=session))
        assert entries
        records = {r.event_id: r for r in AuditRecord.objects.all()}
    for entry in entries:
        record = records[entry.id]  # the entry's own id is the record's event id
        assert (record.kind, record.session_id, record.endpoint_id, record.category) == (
            entry.kind,
            session.pk,
            endpoint.pk,
            "transcript",
        )
    event = security_event_record(tenant_id=tenant.pk, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target="x")
    with tenancy.bind(tenant.pk):
        assert AuditRecord.objects.filter(category="security", data__target="x").count() == 1

    # A rolled-back change leaves no record; an event of no tenant goes to no tenant's stream.
    before = AuditRecord.all_tenants.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        transcript_append(session=session, kind=TranscriptKind.NOTE, actor="system", data={"n": 1})
        raise RuntimeError("roll back")
    security_event_record(tenant_id=None, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target="nobody")
    assert AuditRecord.all_tenants.count() == before
    assert event.pk


def test_a_bulk_run_journals_each_entry_with_its_endpoint():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    endpoints = [factories.endpoint(group).endpoint for _ in range(3)]
    run = factories.bulk_run(endpoints)
    with tenancy.bind(tenant.pk):
        entries = list(TranscriptEntry.objects.filter(action__bulk_run=run)) + list(
            TranscriptEntry.objects.filter(session__actions__bulk_run=run, kind="session.opened")
        )
        records = {r.event_id: r for r in AuditRecord.objects.all()}
    assert len(entries) >= 6
    for entry in entries:
        assert records[entry.id].endpoint_id == entry.session.endpoint_id


def test_delivery_sends_everything_in_order_once_and_moves_the_cursor(receiver):
    tenant, _, session = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    result = delivery.sink_deliver(sink_id=sink.pk)
    assert not result.error and result.sent > 0
    assert _received_ids(receiver) == _journal_ids(tenant.pk)
    again = delivery.sink_deliver(sink_id=sink.pk)
    assert again.sent == 0 and len(receiver.frames) == result.sent
    with tenancy.bind(tenant.pk):
        sink.refresh_from_db()
        assert sink.cursor == AuditRecord.objects.order_by("-seq").first().seq
        assert sink.last_sent_at and not sink.last_error and sink.lease_token is None


def test_a_late_commit_with_a_lower_id_is_not_skipped(receiver):
    """The classic gap, on any database: the row with the lower id becomes visible after a higher
    one was delivered. It gets the next seq when it is stamped, so it is sent, not skipped."""
    tenant, endpoint, session = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    delivery.sink_deliver(sink_id=sink.pk)
    with tenancy.bind(tenant.pk):
        highest = AuditRecord.objects.order_by("-pk").first().pk
        late = AuditRecord.objects.create(
            pk=highest - 10_000 if highest > 10_000 else highest + 10_000,
            tenant=tenant,
            event_id=uuid.uuid4(),
            category="transcript",
            kind="late.commit",
            at=timezone.now(),
            actor="system",
        )
    # Simulate: a higher id first, delivered, then the late lower id appears.
    with tenancy.bind(tenant.pk):
        AuditRecord.objects.filter(pk=late.pk).update(seq=None)
    delivery.sink_deliver(sink_id=sink.pk)
    assert str(late.event_id) in _received_ids(receiver)
    assert _received_ids(receiver) == _journal_ids(tenant.pk)


def test_a_failed_send_keeps_the_cursor_and_the_next_run_resends_from_it(receiver):
    tenant, _, session = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    receiver.mode = "reset"
    failed = delivery.sink_deliver(sink_id=sink.pk)
    assert failed.error and failed.sent == 0
    with tenancy.bind(tenant.pk):
        sink.refresh_from_db()
        assert sink.cursor == 0 and sink.last_error and sink.lease_token is None
        assert sinks_status(tenant_id=tenant.pk)[0].lag_records == AuditRecord.objects.count()
    receiver.mode = "ok"
    # A "restart": nothing in memory carries over, the cursor is in the database.
    done = delivery.sink_deliver(sink_id=sink.pk)
    assert not done.error
    assert _received_ids(receiver) == _journal_ids(tenant.pk)
    status = sinks_status(tenant_id=tenant.pk)[0]
    assert (status.lag_records, status.lag_seconds, status.last_error) == (0, 0.0, "")


def test_a_collector_that_reads_nothing_is_given_up_on_within_the_timeout(receiver, settings):
    settings.CAISEY = {**settings.CAISEY, "AUDIT_SEND_TIMEOUT_S": 0.5}
    tenant, _, _ = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    receiver.mode = "hang"
    result = delivery.sink_deliver(sink_id=sink.pk)
    assert "did not finish" in result.error or "timed out" in result.error
    with tenancy.bind(tenant.pk):
        assert AuditSink.objects.get(pk=sink.pk).cursor == 0


def test_at_least_once_a_worker_that_died_mid_send_leaves_a_lease_that_expires(receiver):
    tenant, _, _ = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    with tenancy.bind(tenant.pk):
        AuditSink.objects.filter(pk=sink.pk).update(
            lease_token=uuid.uuid4(), lease_until=timezone.now() + timedelta(minutes=1)
        )
    assert delivery.sink_deliver(sink_id=sink.pk).skipped == "another worker is sending"
    assert receiver.frames == []
    with tenancy.bind(tenant.pk):
        AuditSink.objects.filter(pk=sink.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert delivery.sink_deliver(sink_id=sink.pk).sent == len(_journal_ids(tenant.pk))


def test_a_disabled_sink_sends_nothing_and_resumes_where_it_stopped(receiver):
    tenant, _, session = _world()
    admin = factories.member(tenant, role=Role.ADMIN).user
    sink = factories.audit_sink(tenant, actor=admin, port=receiver.port)
    delivery.sink_deliver(sink_id=sink.pk)
    sent = len(receiver.frames)
    from audit.services import audit_sink_set_enabled

    audit_sink_set_enabled(actor=admin, tenant_id=tenant.pk, sink_id=sink.pk, enabled=False)
    with transaction.atomic():
        transcript_append(session=session, kind=TranscriptKind.NOTE, actor="system", data={"n": 2})
    assert delivery.sink_deliver(sink_id=sink.pk).skipped == "disabled"
    assert sink.pk not in delivery.sinks_to_deliver()
    audit_sink_set_enabled(actor=admin, tenant_id=tenant.pk, sink_id=sink.pk, enabled=True)
    # The note, and the disabling and enabling themselves (security events), all after the cursor.
    assert delivery.sink_deliver(sink_id=sink.pk).sent == 3
    assert len(receiver.frames) == sent + 3
    assert _received_ids(receiver) == _journal_ids(tenant.pk)


def test_a_sink_gets_its_own_tenants_records_only(receiver):
    alpha, _, _ = _world()
    bravo, _, _ = _world()
    sink = factories.audit_sink(alpha, port=receiver.port)
    delivery.sink_deliver(sink_id=sink.pk)
    tenants = {json.loads(f.split(b"] ", 1)[1])["tenant"] for f in receiver.frames}
    assert tenants == {str(alpha.pk)}
    assert not set(_received_ids(receiver)) & set(_journal_ids(bravo.pk))
    # Tenant B sees neither A's sink nor A's records.
    with tenancy.bind(bravo.pk):
        assert not AuditSink.objects.filter(pk=sink.pk).exists()
        assert not AuditRecord.objects.filter(tenant=alpha).exists()
    assert sinks_status(tenant_id=bravo.pk) == []


def test_private_destinations_are_refused_unless_allowed(receiver):
    tenant, _, _ = _world()
    sink = factories.audit_sink(tenant, port=receiver.port, allow_private=False)
    result = delivery.sink_deliver(sink_id=sink.pk)
    assert "loopback" in result.error and "tenant admin" in result.error
    assert receiver.connections == 0


def test_only_a_tenant_admin_manages_sinks_and_bad_input_changes_nothing():
    from audit.services import SinkInput, audit_sink_create
    from caisey.errors import Forbidden, Rejected

    tenant = factories.tenant()
    admin = factories.member(tenant, role=Role.ADMIN).user
    tech = factories.member(tenant, role=Role.TECHNICIAN).user
    with pytest.raises(Forbidden):
        audit_sink_create(
            actor=tech, tenant_id=tenant.pk, data=SinkInput(name="x", kind="syslog_tcp", host="a.example", port=514)
        )
    for bad in (
        SinkInput(name="", kind="syslog_tcp", host="a.example", port=514),
        SinkInput(name="x", kind="syslog_tcp", host="a b", port=514),
        SinkInput(name="x", kind="syslog_tcp", host="a.example", port=70000),
        SinkInput(name="x", kind="json_https", url="http://a.example/"),
        SinkInput(name="x", kind="json_https", url="https://u:p@a.example/"),
        SinkInput(name="x", kind="carrier_pigeon"),
        SinkInput(name="x", kind="syslog_tcp", host="a.example", port=514, ca_pem="not a certificate"),
    ):
        with pytest.raises(Rejected):
            audit_sink_create(actor=admin, tenant_id=tenant.pk, data=bad)
    with tenancy.bind(tenant.pk):
        assert not AuditSink.objects.exists()


def test_the_sweep_queues_one_delivery_per_enabled_sink(receiver, settings):
    from audit import tasks

    settings.CELERY_TASK_ALWAYS_EAGER = True
    from caisey.celery import app

    app.conf.task_always_eager = True
    try:
        tenant, _, _ = _world()
        factories.audit_sink(tenant, port=receiver.port)
        assert tasks.audit_stream_sweep() == 1
    finally:
        app.conf.task_always_eager = False
    assert _received_ids(receiver) == _journal_ids(tenant.pk)


@pytest.mark.django_db(transaction=True)
def test_no_gap_when_a_lower_id_commits_after_a_higher_one(receiver):
    """Real out-of-order commits (PostgreSQL: concurrent writers). Transaction 1 journals a
    record first (the lower id) and stays open; transaction 2 journals one and commits; the
    sink is delivered; then transaction 1 commits. Both records arrive."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: a second transaction cannot commit while the first is open")
    tenant, _, session = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    delivery.sink_deliver(sink_id=sink.pk)
    start = len(receiver.frames)
    written, release = threading.Event(), threading.Event()
    ids: dict[str, uuid.UUID] = {}

    def slow_writer():
        try:
            with tenancy.bind(tenant.pk), transaction.atomic():
                event = security_event_record(
                    tenant_id=tenant.pk, kind=SecurityEventKind.LOGIN_FAILED, actor=Party.SYSTEM, target="slow"
                )
                ids["slow"] = AuditRecord.objects.get(data__target="slow").event_id
                written.set()
                release.wait(30)
                assert event.pk
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert written.wait(30)
    security_event_record(tenant_id=tenant.pk, kind=SecurityEventKind.LOGIN_FAILED, actor=Party.SYSTEM, target="fast")
    with tenancy.bind(tenant.pk):
        fast = AuditRecord.objects.get(data__target="fast")
        slow_id = AuditRecord.objects.filter(data__target="slow").count()
    assert slow_id == 0  # not visible yet
    delivery.sink_deliver(sink_id=sink.pk)
    assert _received_ids(receiver)[start:] == [str(fast.event_id)]
    release.set()
    thread.join(30)
    delivery.sink_deliver(sink_id=sink.pk)
    assert _received_ids(receiver)[start:] == [str(fast.event_id), str(ids["slow"])]
    with tenancy.bind(tenant.pk):
        slow = AuditRecord.objects.get(event_id=ids["slow"])
        fast.refresh_from_db()
        assert slow.pk < fast.pk and slow.seq > fast.seq  # lower id, later commit, later seq
    assert journal_sequence() == 0


def test_the_journal_keeps_what_a_sink_has_not_sent_and_prunes_the_rest(receiver, settings):
    from audit.journal import journal_prune

    tenant, _, _ = _world()
    quiet, _, _ = _world()  # no sinks: nothing to keep old records for
    sent = factories.audit_sink(tenant, port=receiver.port)
    held = factories.audit_sink(tenant, port=receiver.port)
    delivery.sink_deliver(sink_id=sent.pk)
    journal_sequence()
    later = timezone.now() + timedelta(days=settings.CAISEY["AUDIT_JOURNAL_DAYS"] + 1)
    total, quiet_total = len(_journal_ids(tenant.pk)), len(_journal_ids(quiet.pk))
    assert total and quiet_total
    # ``held`` has sent nothing: every record of the tenant stays; the quiet tenant's go.
    assert journal_prune(now=later) == quiet_total
    assert _journal_ids(quiet.pk) == [] and len(_journal_ids(tenant.pk)) == total
    delivery.sink_deliver(sink_id=held.pk)
    assert journal_prune(now=timezone.now()) == 0  # not old yet
    assert journal_prune(now=later) == total and _journal_ids(tenant.pk) == []


def test_a_long_backlog_renews_the_lease_batch_by_batch_and_the_sweep_skips_a_leased_sink(receiver, settings):
    settings.CAISEY = {**settings.CAISEY, "AUDIT_BATCH": 2}
    tenant, _, _ = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)
    for n in range(5):
        security_event_record(tenant_id=tenant.pk, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target=f"{n}")
    seen_leases = []
    real_send = delivery.send

    def watching_send(s, payload):
        with tenancy.bind(tenant.pk):
            row = AuditSink.objects.get(pk=s.pk)
        seen_leases.append(row.lease_until)
        assert s.pk not in delivery.sinks_to_deliver()  # being sent: not queued again
        real_send(s, payload)

    delivery.send = watching_send
    try:
        result = delivery.sink_deliver(sink_id=sink.pk)
    finally:
        delivery.send = real_send
    assert len(seen_leases) >= 2 and seen_leases == sorted(seen_leases) and seen_leases[-1] > seen_leases[0]
    assert result.sent == len(_journal_ids(tenant.pk)) == len(receiver.frames)
    assert sink.pk in delivery.sinks_to_deliver()  # lease released


def test_a_fault_of_ours_is_shown_on_the_sink_and_leaves_the_cursor(receiver, monkeypatch):
    tenant, _, _ = _world()
    sink = factories.audit_sink(tenant, port=receiver.port)

    def broken(s, payload):
        raise ValueError("a bug")

    monkeypatch.setattr(delivery, "send", broken)
    with pytest.raises(ValueError):
        delivery.sink_deliver(sink_id=sink.pk)
    with tenancy.bind(tenant.pk):
        sink.refresh_from_db()
    assert (sink.cursor, sink.last_error, sink.lease_token) == (0, "internal error: ValueError", None)
