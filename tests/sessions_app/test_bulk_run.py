"""A bulk run: one diagnostic across many endpoints, each in a session of its own."""

from __future__ import annotations

import pytest
from django.utils import timezone

from bridge.models import OutboxMessage
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import Action, ActionStatus, SessionStatus, SupportSession, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services import bulk
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fleet():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    endpoints = [factories.endpoint(group, hostname=f"pos{n:02d}").endpoint for n in range(3)]
    Endpoint.all_tenants.filter(pk__in=[e.pk for e in endpoints[:2]]).update(last_seen_at=timezone.now())
    return factories.technician(tenant), [Endpoint.all_tenants.get(pk=e.pk) for e in endpoints]


def finish(action: Action) -> None:
    services.action_result_receive(
        endpoint=action.endpoint, body=p.ActionResult(action_id=str(action.pk), status="succeeded", exit_code=0)
    )


def test_each_endpoint_gets_a_session_and_an_action_with_the_conditions_it_started_under(fleet):
    tech, endpoints = fleet
    run = bulk.bulk_run_start(actor=tech, endpoints=endpoints, kind="system_summary", params={}, reason="outage")
    actions = list(Action.all_tenants.filter(bulk_run=run).select_related("session"))
    assert len(actions) == 3 and all(a.status == ActionStatus.QUEUED for a in actions)
    assert {a.endpoint_id for a in actions} == {e.pk for e in endpoints}
    for action in actions:
        assert action.conditions_at_dispatch["connectivity"] in ("lazy", "offline")
        opened = TranscriptEntry.all_tenants.get(session=action.session, kind="session.opened")
        assert opened.data["bridge"] == action.conditions_at_dispatch
    offline = next(a for a in actions if a.endpoint_id == endpoints[2].pk)
    assert offline.conditions_at_dispatch["connectivity"] == "offline"


def test_the_session_closes_and_the_endpoint_rests_once_its_action_ended(fleet):
    tech, endpoints = fleet
    run = bulk.bulk_run_start(actor=tech, endpoints=endpoints[:2], kind="system_summary", params={})
    first, second = Action.all_tenants.filter(bulk_run=run).select_related("endpoint").order_by("endpoint__hostname")
    # A technician goes on working in the second endpoint's session: that one stays open.
    services.action_request(actor=tech, session=second.session, kind="disk_usage", params={})
    finish(first)
    finish(second)
    first_session = SupportSession.all_tenants.get(pk=first.session_id)
    assert first_session.status == SessionStatus.CLOSED and first_session.status_changed_by == "system"
    assert Endpoint.all_tenants.get(pk=first.endpoint_id).mode == "lazy"
    assert OutboxMessage.all_tenants.filter(endpoint_id=first.endpoint_id, kind="mode.set", body__mode="lazy").exists()
    assert SupportSession.all_tenants.get(pk=second.session_id).status == SessionStatus.OPEN
    assert Endpoint.all_tenants.get(pk=second.endpoint_id).mode == "active"
