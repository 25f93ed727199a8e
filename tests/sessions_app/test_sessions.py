"""Session services: open, note, follow-up, close; who may; the session sweeps (every tenant, by name)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from caisey import tenancy
from caisey.errors import Forbidden
from endpoints.models import AgentMode, Endpoint, Role
from sessions_app.kinds import TranscriptKind
from sessions_app.models import SessionStatus, SupportSession, TranscriptEntry
from sessions_app.services import followups, sessions
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def session():
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    tech = factories.technician(tenant)
    s = sessions.session_open(actor=tech, endpoint=endpoint, reason="T-1")
    sessions.session_add_note(actor=tech, session=s, text="first")
    return s


def test_abandoned_sessions_are_closed_with_a_synthetic_entry(session):
    SupportSession.all_tenants.filter(pk=session.pk).update(last_activity_at=timezone.now() - timedelta(days=2))
    assert sessions.abandoned_sessions_sweep() == 1
    session.refresh_from_db()
    assert session.status == SessionStatus.CLOSED and session.status_changed_by == "system"
    last = TranscriptEntry.all_tenants.filter(session=session).order_by("-index").first()
    assert last.kind == "session.closed" and last.actor == "system" and last.data["synthetic"] is True
    assert "no activity since" in last.data["reason"]
    assert sessions.abandoned_sessions_sweep() == 0


def test_idle_sweep_lets_the_endpoint_rest(session):
    assert Endpoint.all_tenants.get(pk=session.endpoint_id).mode == AgentMode.ACTIVE
    SupportSession.all_tenants.filter(pk=session.pk).update(last_activity_at=timezone.now() - timedelta(days=1))
    assert sessions.idle_sessions_sweep() == 1
    assert Endpoint.all_tenants.get(pk=session.endpoint_id).mode == AgentMode.LAZY


@pytest.mark.parametrize("role", [Role.VIEWER, "other tenant"])
def test_only_the_tenants_operators_may_write(session, role):
    """PermissionDenied from services became Forbidden (403 in the API, a message in the console)."""
    if role == "other tenant":
        actor = factories.technician(factories.tenant())
    else:
        actor = factories.member(session.tenant, role=role).user
    for write in (
        lambda: sessions.session_add_note(actor=actor, session=session, text="x"),
        lambda: sessions.session_close(actor=actor, session=session),
        lambda: followups.follow_up_schedule(actor=actor, session=session, at=timezone.now() + timedelta(days=1)),
        lambda: sessions.session_open(actor=actor, endpoint=session.endpoint),
    ):
        with pytest.raises(Forbidden):
            write()
    assert SupportSession.all_tenants.get(pk=session.pk).status == SessionStatus.OPEN


def test_a_service_refuses_to_act_inside_another_tenants_scope(session):
    other = factories.tenant()
    with tenancy.bind(other.pk), pytest.raises(tenancy.TenantMismatch):
        sessions.session_add_note(actor=session.opened_by, session=session, text="from the wrong scope")


def test_note_and_close_are_recorded_with_typed_kinds(session):
    sessions.session_close(actor=session.opened_by, session=session, reason="fixed")
    kinds = list(TranscriptEntry.all_tenants.filter(session=session).order_by("index").values_list("kind", flat=True))
    assert kinds == [TranscriptKind.SESSION_OPENED, TranscriptKind.NOTE, TranscriptKind.SESSION_CLOSED]
    assert kinds == ["session.opened", "note", "session.closed"]  # the stored strings did not change
    with pytest.raises(sessions.SessionError, match="already closed"):
        sessions.session_close(actor=session.opened_by, session=session)


def test_a_follow_up_in_the_past_is_refused(session):
    with pytest.raises(sessions.SessionError, match="in the future"):
        followups.follow_up_schedule(actor=session.opened_by, session=session, at=timezone.now() - timedelta(minutes=1))
