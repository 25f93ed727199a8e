"""Events are written in the transaction of the change they report: one delivery row per event and
enabled destination that wants it; a change rolled back leaves none."""

from __future__ import annotations

import pytest
from django.db import transaction

from caisey import tenancy
from endpoints.models import Role
from integrations import services
from integrations.events import event_type_of
from integrations.models import DeliveryStatus, WebhookDelivery
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import TranscriptEntry
from sessions_app.services import sessions as session_services
from tests import factories


def _rows():
    with tenancy.system():
        return list(WebhookDelivery.objects.order_by("id"))


@pytest.fixture
def endpoint(tenant):
    return factories.endpoint(factories.client_group(tenant)).endpoint


def test_opening_a_session_writes_one_delivery_per_destination_that_wants_it(admin, tenant, endpoint):
    wants = services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=["session.opened", "session.closed"]
    ).endpoint
    services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/b", events=["prompt.issued"])
    off = services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/c", events=["session.opened"])
    services.webhook_set_enabled(actor=admin, endpoint=off.endpoint, enabled=False)
    # Another tenant's destination for the same event hears nothing of this tenant.
    other = factories.tenant("Other MSP")
    services.webhook_create(
        actor=factories.member(other, role=Role.ADMIN).user,
        tenant_id=other.pk,
        url="https://1.1.1.1/other",
        events=["session.opened"],
    )

    session = factories.support_session(endpoint, reason="ticket 99")

    (row,) = _rows()
    assert (row.endpoint_id, row.event_type, row.status, row.attempts) == (wants.pk, "session.opened", "queued", 0)
    payload = row.payload
    assert payload["id"] == str(row.event_id) and payload["version"] == 1 and payload["type"] == "session.opened"
    assert payload["tenant"] == str(tenant.pk)
    assert payload["data"]["session"] == {"id": str(session.pk), "reason": "ticket 99", "ticket": None, "incidents": []}
    assert payload["data"]["endpoint"]["hostname"] == endpoint.hostname
    assert payload["data"]["transcript"]["kind"] == "session.opened"


def test_a_change_rolled_back_leaves_no_delivery(admin, tenant, endpoint):
    services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=["session.opened"])

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        session_services.session_open(actor=admin, endpoint=endpoint, reason="rolled back")
        assert len(_rows()) == 1  # written inside the change's transaction...
        raise Abort
    assert _rows() == []  # ...and gone with it


def test_the_delivery_task_is_queued_only_when_the_change_commits(
    admin, tenant, endpoint, monkeypatch, django_capture_on_commit_callbacks
):
    services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=["session.opened"])
    queued: list[int] = []
    monkeypatch.setattr("integrations.tasks.webhook_deliver.apply_async", lambda args, **kw: queued.append(args[0]))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        factories.support_session(endpoint)
        assert queued == []
    assert callbacks and queued == [row.pk for row in _rows()]


def test_a_bulk_run_writes_the_events_of_every_session_it_opens(admin, tenant):
    group = factories.client_group(tenant)
    endpoints = [factories.endpoint(group).endpoint for _ in range(3)]
    services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=["session.opened"])
    factories.bulk_run(endpoints, actor=admin)
    rows = _rows()
    assert sorted(r.payload["data"]["endpoint"]["id"] for r in rows) == sorted(str(e.pk) for e in endpoints)
    assert len({r.event_id for r in rows}) == 3 and {r.status for r in rows} == {DeliveryStatus.QUEUED}


def test_prompts_map_to_their_events(admin, tenant, endpoint):
    services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=["prompt.issued", "prompt.escalated"]
    )
    session = factories.support_session(endpoint)
    factories.prompt(session, actor=admin, title="Restart the spooler?")
    (row,) = _rows()
    assert row.event_type == "prompt.issued"
    assert row.payload["data"]["detail"]["title"] == "Restart the spooler?"


@pytest.mark.parametrize(
    ("kind", "data", "event"),
    [
        (K.ACTION_RESULT, {"status": "succeeded"}, "action.finished"),
        (K.ACTION_RESULT, {"status": "failed"}, "action.failed"),
        (K.ACTION_RESULT, {"status": "refused"}, "action.failed"),
        (K.ACTION_TIMED_OUT, {}, "action.timed_out"),
        (K.ACTION_FAILED_TO_DELIVER, {}, "action.failed_to_deliver"),
        (K.PROMPT_APPROVED, {}, "prompt.decided"),
        (K.PROMPT_DENIED, {}, "prompt.decided"),
        (K.PROMPT_EXPIRED, {}, "prompt.expired"),
        (K.BRIDGE_CONNECTIVITY, {"to": "offline"}, "endpoint.offline"),
        (K.BRIDGE_CONNECTIVITY, {"to": "degraded"}, "endpoint.degraded"),
        (K.BRIDGE_CONNECTIVITY, {"to": "active"}, "endpoint.back"),
        (K.ACTION_OUTPUT, {}, None),
        (K.NOTE, {}, None),
    ],
)
def test_transcript_kinds_map_to_event_types(kind, data, event):
    assert event_type_of(TranscriptEntry(kind=str(kind), data=data)) == event
