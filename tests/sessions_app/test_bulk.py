"""A bulk run: one diagnostic across many endpoints, each in a session of its own; which endpoints it
reaches is one rule for the console and the API."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from bridge.models import OutboxMessage
from caisey import tenancy
from caisey.errors import Rejected
from caisey_agent import protocol as p
from endpoints.models import AgentMode, Endpoint, EndpointStatus
from sessions_app.models import Action, ActionStatus, BulkRun, SessionStatus, SupportSession, TranscriptEntry
from sessions_app.selectors import bulk as bulk_selectors
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
    assert Endpoint.all_tenants.get(pk=second.endpoint_id).mode == AgentMode.ACTIVE


# --- choosing the endpoints: one rule for the console and the API (selectors.bulk.bulk_run_endpoints) ----


@pytest.fixture
def chooser():
    """A technician's fleet with one revoked endpoint, and a rival tenant's endpoint."""
    tenant = factories.tenant()
    group = factories.client_group(tenant, name="Retail")
    live = [factories.endpoint(group, hostname=f"till{n}").endpoint for n in range(2)]
    revoked = factories.endpoint(group, hostname="till-old").endpoint
    Endpoint.all_tenants.filter(pk=revoked.pk).update(status=EndpointStatus.REVOKED)
    rival = factories.endpoint(factories.client_group(factories.tenant()), hostname="rival").endpoint
    return tenant, group, factories.technician(tenant), live, revoked, rival


def _console(tech, data):
    client = Client()
    client.force_login(tech)
    return client.post(reverse("console:bulk_start"), data, follow=True)


def _api(tech, body):
    client = APIClient()  # with a token, as scripts call it (a browser session would need a step-up)
    _, token = factories.api_token(tech)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.post("/api/v1/bulk-runs/", body, format="json")


def test_selector_group_targets_its_enrolled_endpoints(chooser):
    tenant, group, tech, live, revoked, rival = chooser
    with tenancy.bind(tenant.pk):
        chosen = bulk_selectors.bulk_run_endpoints(client_group=group.slug)
        assert [e.hostname for e in chosen] == ["till0", "till1"]
        assert bulk_selectors.bulk_run_endpoints(client_group="retail") == chosen  # by name too


@pytest.mark.parametrize("which", ["revoked", "rival", "unknown", "malformed"])
def test_selector_refuses_an_explicitly_chosen_endpoint_it_cannot_reach(chooser, which):
    tenant, group, tech, live, revoked, rival = chooser
    bad = {"revoked": revoked.pk, "rival": rival.pk, "unknown": uuid.uuid4(), "malformed": "not-an-id"}[which]
    expected = "revoked: till-old" if which == "revoked" else f"no such endpoint: {bad}"
    with tenancy.bind(tenant.pk), pytest.raises(bulk_selectors.BulkChoiceRejected, match=expected) as refused:
        bulk_selectors.bulk_run_endpoints(endpoint_ids=[live[0].pk, bad])
    assert isinstance(refused.value, Rejected) and refused.value.field == "endpoints"


def test_console_and_api_refuse_a_revoked_endpoint_alike(chooser):
    tenant, group, tech, live, revoked, rival = chooser
    ids = [str(live[0].pk), str(revoked.pk)]
    page = _console(tech, {"kind": "system_summary", "endpoint": ids}).content.decode()
    assert "Bulk run not started: revoked: till-old" in page
    response = _api(tech, {"kind": "system_summary", "endpoints": ids})
    assert response.status_code == 400
    assert response.json()["field_errors"] == {"endpoints": ["revoked: till-old"]}
    assert not BulkRun.all_tenants.exists() and not SupportSession.all_tenants.exists()


def test_console_and_api_refuse_a_foreign_endpoint_alike(chooser):
    tenant, group, tech, live, revoked, rival = chooser
    page = _console(tech, {"kind": "system_summary", "endpoint": [str(rival.pk)]}).content.decode()
    assert f"Bulk run not started: no such endpoint: {rival.pk}" in page
    response = _api(tech, {"kind": "system_summary", "endpoints": [str(rival.pk)]})
    assert response.status_code == 400 and response.json()["detail"] == f"endpoints: no such endpoint: {rival.pk}"
    assert not BulkRun.all_tenants.exists()


def test_console_and_api_run_a_group_on_its_enrolled_endpoints(chooser):
    tenant, group, tech, live, revoked, rival = chooser
    _console(tech, {"kind": "system_summary", "group": group.slug})
    assert _api(tech, {"kind": "system_summary", "client_group": group.slug}).status_code == 201
    for run in BulkRun.all_tenants.all():
        reached = set(Action.all_tenants.filter(bulk_run=run).values_list("endpoint_id", flat=True))
        assert reached == {e.pk for e in live}
    assert BulkRun.all_tenants.count() == 2
