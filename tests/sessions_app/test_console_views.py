"""The session console pages: open, run, queue while offline, cancel, notes, follow-up, close."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from caisey import tenancy
from endpoints.models import AgentMode, Endpoint, Role
from sessions_app.models import Action, ActionStatus, SessionStatus, SupportSession, TranscriptEntry
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    tenant = factories.tenant()
    enrolled = factories.endpoint(factories.client_group(tenant), hostname="dc01")
    tech = factories.technician(tenant)
    return tenant, enrolled.endpoint, tech


def online(endpoint):
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now(), mode=AgentMode.ACTIVE)


def test_technician_opens_a_session_and_runs_a_diagnostic(client, world):
    tenant, endpoint, tech = world
    online(endpoint)
    client.force_login(tech)
    response = client.post(reverse("console:session_open", args=[endpoint.pk]), {"reason": "INC-7 ERP down"})
    session = SupportSession.all_tenants.get(endpoint=endpoint)
    assert response.status_code == 302 and response.url == reverse("console:session_detail", args=[session.pk])
    assert session.reason == "INC-7 ERP down" and session.opened_by == tech and not session.opened_offline
    client.post(
        reverse("console:action_run", args=[session.pk]),
        {"kind": "dns_resolve", "dns_resolve__name": "erp.acme.local", "dns_resolve__record_type": "A"},
    )
    action = Action.all_tenants.get(session=session)
    assert action.kind == "dns_resolve" and action.params["name"] == "erp.acme.local"
    assert action.status == ActionStatus.QUEUED and action.outbox_id
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "dns_resolve" in page and "Read-only" not in page
    assert "erp.acme.local" in page


def test_bad_parameters_are_refused_and_nothing_is_queued(client, world):
    tenant, endpoint, tech = world
    client.force_login(tech)
    client.post(reverse("console:session_open", args=[endpoint.pk]))
    session = SupportSession.all_tenants.get(endpoint=endpoint)
    response = client.post(
        reverse("console:action_run", args=[session.pk]),
        {"kind": "tcp_connect", "tcp_connect__host": "db", "tcp_connect__port": "99999"},
        follow=True,
    )
    assert "Not queued" in response.content.decode()
    response = client.post(reverse("console:action_run", args=[session.pk]), {"kind": "rm_rf"}, follow=True)
    assert "unknown action kind" in response.content.decode()
    assert not Action.all_tenants.filter(session=session).exists()


def test_offline_endpoint_session_is_read_only_but_queues_notes_and_follow_ups(client, world):
    tenant, endpoint, tech = world
    client.force_login(tech)
    client.post(reverse("console:session_open", args=[endpoint.pk]))
    session = SupportSession.all_tenants.get(endpoint=endpoint)
    assert session.opened_offline
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "Read-only" in page and "Queue an action for when it returns" in page
    client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary", "expires_hours": "2"})
    action = Action.all_tenants.get(session=session)
    assert action.status == ActionStatus.QUEUED
    assert timedelta(hours=1.9) < action.expires_at - timezone.now() < timedelta(hours=2.1)
    client.post(reverse("console:note_add", args=[session.pk]), {"text": "user says it sleeps at lunch"})
    when = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    client.post(reverse("console:follow_up", args=[session.pk]), {"at": when, "note": "retry tomorrow"})
    session.refresh_from_db()
    assert session.follow_up_at is not None and session.follow_up_note == "retry tomorrow"
    kinds = list(TranscriptEntry.all_tenants.filter(session=session).values_list("kind", flat=True))
    assert kinds == ["session.opened", "action.queued", "note", "session.follow_up_scheduled"]
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "<q>user says it sleeps at lunch</q>" in page  # the record names kinds by TranscriptKind


def test_cancel_and_close(client, world):
    tenant, endpoint, tech = world
    client.force_login(tech)
    client.post(reverse("console:session_open", args=[endpoint.pk]))
    session = SupportSession.all_tenants.get(endpoint=endpoint)
    client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary"})
    action = Action.all_tenants.get(session=session)
    client.post(reverse("console:action_cancel", args=[session.pk, action.pk]))
    action.refresh_from_db()
    assert action.status == ActionStatus.CANCELLED and action.status_changed_by == f"user:{tech.username}"
    response = client.post(reverse("console:action_cancel", args=[session.pk, action.pk]), follow=True)
    assert "Not cancelled" in response.content.decode()
    client.post(reverse("console:session_close", args=[session.pk]), {"reason": "fixed"})
    session.refresh_from_db()
    assert session.status == SessionStatus.CLOSED
    response = client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary"}, follow=True)
    assert "closed" in response.content.decode()


def test_viewer_can_read_but_not_operate(client, world):
    tenant, endpoint, tech = world
    viewer = factories.member(tenant, role=Role.VIEWER).user
    client.force_login(viewer)
    assert client.post(reverse("console:session_open", args=[endpoint.pk])).status_code == 403
    assert not SupportSession.all_tenants.exists()


def test_another_tenants_session_is_not_found(client, world):
    tenant, endpoint, tech = world
    other_tenant = factories.tenant()
    other = factories.endpoint(factories.client_group(other_tenant), hostname="secret-host").endpoint
    other_tech = factories.technician(other_tenant)
    with tenancy.bind(other_tenant.pk):
        from sessions_app.services import sessions as session_services

        session = session_services.session_open(actor=other_tech, endpoint=other)
    client.force_login(tech)
    assert client.get(reverse("console:session_detail", args=[session.pk])).status_code == 404
    assert client.post(reverse("console:note_add", args=[session.pk]), {"text": "x"}).status_code == 404
    assert client.post(reverse("console:session_open", args=[other.pk])).status_code == 404
