"""Events that are no session's transcript entry: a bulk run finished, a share link viewed, security
events, an endpoint's connectivity while it is in no open session. Each is written in the
transaction of its change (rolled back with it), once, only for destinations that want it; and the
session events carry the session's and its incidents' ticket references and links."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, connections, transaction

from bridge.services import agent_connection_record, agent_disconnected
from caisey import tenancy
from caisey.actors import Party
from caisey_agent import protocol as p
from endpoints import services as endpoint_services
from endpoints.models import Endpoint, Role, SecurityEventKind
from endpoints.security_log import security_event_record
from integrations import services
from integrations.models import WebhookDelivery
from sessions_app.models import Action
from sessions_app.services import actions as action_services
from sessions_app.services import sessions as session_services
from sessions_app.services import sharing
from tests import factories


def _rows(event_type: str | None = None):
    with tenancy.system():
        rows = WebhookDelivery.objects.order_by("id")
        return list(rows.filter(event_type=event_type) if event_type else rows)


def _hook(admin, tenant, *events):
    return services.webhook_create(actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/a", events=list(events))


def _finish(action: Action, status: str = "succeeded") -> None:
    action_services.action_result_receive(
        endpoint=action.endpoint, body=p.ActionResult(action_id=str(action.pk), status=status, exit_code=0)
    )


def connect_and_drop(endpoint) -> None:
    """The agent connects (offline to up), then its socket closes (up to offline), as the bridge records them."""
    hello = p.Hello(endpoint_id=str(endpoint.pk), credential="", agent_version="1.0")
    with tenancy.bind(endpoint.tenant_id):
        agent_connection_record(
            endpoint=Endpoint.all_tenants.get(pk=endpoint.pk), hello=hello, connection_id="c1", remote_ip="10.0.0.9"
        )
    agent_disconnected(endpoint_id=endpoint.pk, connection_id="c1", close_code=1006)


def test_a_bulk_run_finished_is_one_event_written_by_its_last_action(admin, tenant):
    group = factories.client_group(tenant)
    endpoints = [factories.endpoint(group).endpoint for _ in range(3)]
    _hook(admin, tenant, "bulk_run.finished")
    run = factories.bulk_run(endpoints, actor=admin, reason="patch day")
    first, second, third = Action.all_tenants.filter(bulk_run=run).select_related("endpoint").order_by("pk")
    _finish(first)
    _finish(second, status="failed")
    assert _rows("bulk_run.finished") == []  # one is still out
    with tenancy.bind(tenant.pk):
        action_services.action_cancel(actor=admin, action=third)  # an end that is no result counts too
    (row,) = _rows("bulk_run.finished")
    data = row.payload["data"]
    assert data["bulk_run"]["id"] == str(run.pk) and data["bulk_run"]["reason"] == "patch day"
    assert data["actions"] == 3 and data["by_status"] == {"succeeded": 1, "failed": 1, "cancelled": 1}


def test_a_share_link_viewed_carries_the_link_and_the_sessions_ticket(admin, tenant):
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    endpoint_services.tenant_ticket_link_set(
        actor=admin, tenant_id=tenant.pk, template="https://psa.example/t?id={ticket}"
    )
    session = factories.support_session(endpoint)
    with tenancy.bind(tenant.pk):
        session_services.session_set_ticket(actor=admin, session=session, ticket="T-7 &x")
    link, _ = factories.share_link(actor=admin, session=session, label="Ms Client")
    _hook(admin, tenant, "share_link.viewed")
    with tenancy.bind(tenant.pk):
        sharing.share_link_record_view(link=link, ip="198.51.100.7", user_agent="Firefox", format="pdf")
    (row,) = _rows()
    data = row.payload["data"]
    assert data["share_link"]["id"] == str(link.pk) and data["share_link"]["session"] == str(session.pk)
    assert data["share_link"]["ticket"] == {"ticket": "T-7 &x", "url": "https://psa.example/t?id=T-7%20%26x"}
    assert (data["format"], data["address"], data["user_agent"]) == ("pdf", "198.51.100.7", "Firefox")


def test_session_events_carry_the_ticket_of_the_session_and_of_its_incidents(admin, tenant):
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    endpoint_services.tenant_ticket_link_set(actor=admin, tenant_id=tenant.pk, template="https://psa.example/{ticket}")
    session = factories.support_session(endpoint)
    incident = factories.incident(tenant, actor=admin, sessions=[session], title="ERP down")
    with tenancy.bind(tenant.pk):
        session_services.session_set_ticket(actor=admin, session=session, ticket="S-1")
        from sessions_app.services import incidents

        incidents.incident_set_ticket(actor=admin, incident=incident, ticket="I-9")
    _hook(admin, tenant, "session.closed")
    with tenancy.bind(tenant.pk), transaction.atomic():
        session_services.session_end(session=session, actor=admin, reason="done")
    (row,) = _rows()
    assert row.payload["data"]["session"]["ticket"] == {"ticket": "S-1", "url": "https://psa.example/S-1"}
    assert row.payload["data"]["session"]["incidents"] == [
        {"id": str(incident.pk), "title": "ERP down", "ticket": {"ticket": "I-9", "url": "https://psa.example/I-9"}}
    ]


def test_a_security_event_is_an_event_written_with_it_and_rolled_back_with_it(admin, tenant):
    _hook(admin, tenant, "security.event")
    before = len(_rows("security.event"))  # creating the destination is itself one

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        security_event_record(
            tenant_id=tenant.pk, kind=SecurityEventKind.LOCKOUT, actor=None, target="alice", address="203.0.113.5"
        )
        raise Abort
    assert len(_rows("security.event")) == before
    security_event_record(tenant_id=tenant.pk, kind=SecurityEventKind.TOKEN_REVOKED, actor=Party.SYSTEM, target="ci")
    row = _rows("security.event")[-1]
    data = row.payload["data"]
    assert (data["kind"], data["actor"], data["target"]) == ("token_revoked", "system", "ci")
    assert uuid.UUID(data["audit_event_id"])
    # A sign-in failure nobody can be found for is no tenant's: no destination hears it.
    security_event_record(tenant_id=None, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target="nobody")
    assert _rows("security.event")[-1].pk == row.pk


def test_an_endpoint_in_no_session_going_offline_and_back_is_an_event(admin, tenant):
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    _hook(admin, tenant, "endpoint.offline", "endpoint.back")
    connect_and_drop(endpoint)
    assert [r.event_type for r in _rows()] == ["endpoint.back", "endpoint.offline"]
    offline = _rows()[1].payload["data"]
    assert offline["session"] is None and offline["endpoint"]["id"] == str(endpoint.pk)
    assert offline["detail"]["to"] == "offline"


def test_an_endpoint_in_an_open_session_is_told_by_its_session_only(admin, tenant):
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    factories.support_session(endpoint)
    _hook(admin, tenant, "endpoint.offline", "endpoint.back")
    connect_and_drop(endpoint)
    assert _rows() == []  # the session's connectivity sweep writes its bridge.connectivity entries


def _finish_at_once(action: Action, barrier: threading.Barrier, errors: list) -> None:
    try:
        barrier.wait(timeout=10)
        _finish(action)
    except Exception as exc:  # reported by the caller's assertion
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.skipif(
    connections["default"].vendor != "postgresql",
    reason="needs PostgreSQL (concurrent transactions, row locks): runs in the PostgreSQL phase of .ci/run",
)
@pytest.mark.django_db(transaction=True)
def test_the_last_two_actions_of_a_run_ending_at_once_write_the_event_once():
    """Each of the run's last two actions ends in its own transaction, at the same moment: the run's
    row lock makes exactly one of them see the run done (without it, both may count the other as
    still running and neither writes the event, or both write it)."""
    tenant = factories.tenant("Race MSP")
    admin = factories.member(tenant, role=Role.ADMIN).user
    group = factories.client_group(tenant)
    endpoints = [factories.endpoint(group).endpoint for _ in range(2)]
    _hook(admin, tenant, "bulk_run.finished")
    for attempt in range(5):
        run = factories.bulk_run(endpoints, actor=admin, reason=f"race {attempt}")
        actions = list(Action.all_tenants.filter(bulk_run=run).select_related("endpoint"))
        barrier, errors = threading.Barrier(2), []
        threads = [threading.Thread(target=_finish_at_once, args=(a, barrier, errors)) for a in actions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        events = [r for r in _rows("bulk_run.finished") if r.payload["data"]["bulk_run"]["id"] == str(run.pk)]
        assert len(events) == 1, f"attempt {attempt}: {len(events)} events"
