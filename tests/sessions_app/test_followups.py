"""Follow-ups: scheduled by a technician or approved by the end user, listed per technician and
per tenant, reminded once when due (console and e-mail), opened as a session linked both ways."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from caisey import tenancy
from caisey.errors import Forbidden, Rejected
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import FollowUp, FollowUpStatus, PromptParty, PromptState, SupportSession, TranscriptEntry
from sessions_app.selectors import followups as selectors
from sessions_app.services import approvals, followups, sessions
from sessions_app.services.sessions import SessionError
from tests import factories

pytestmark = pytest.mark.django_db


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant()
        self.group = factories.client_group(self.tenant)
        self.endpoint = factories.endpoint(self.group, hostname="lap01").endpoint
        self.tech = factories.technician(self.tenant)
        self.tech.email = "tech@msp.example"
        self.tech.save(update_fields=["email"])
        self.colleague = factories.technician(self.tenant)
        self.session = sessions.session_open(actor=self.tech, endpoint=self.endpoint, reason="T-9 backups")

    def bound(self):
        return tenancy.bind(self.tenant.pk)


@pytest.fixture
def world():
    return World()


def kinds(session) -> list[str]:
    return list(TranscriptEntry.all_tenants.filter(session=session).order_by("index").values_list("kind", flat=True))


def test_a_technician_schedules_and_it_is_listed_for_them_and_the_tenant(world):
    at = timezone.now() + timedelta(days=1)
    follow_up = followups.follow_up_schedule(actor=world.tech, session=world.session, at=at, note="check backups")
    assert follow_up.assigned_to == world.tech and follow_up.status == FollowUpStatus.SCHEDULED
    session = SupportSession.all_tenants.get(pk=world.session.pk)
    assert session.follow_up_at == at and session.follow_up_note == "check backups"  # the header line stays
    entry = TranscriptEntry.all_tenants.get(session=world.session, kind=K.SESSION_FOLLOW_UP_SCHEDULED)
    assert entry.data["follow_up"] == str(follow_up.pk) and entry.actor == f"user:{world.tech.username}"
    factories.follow_up(world.session, actor=world.colleague)
    with world.bound():
        assert [f.pk for f in selectors.follow_up_list(assigned_to_id=world.tech.pk)] == [follow_up.pk]
        assert len(selectors.follow_up_list()) == 2
        assert list(selectors.follow_up_list(status="due")) == []
        with pytest.raises(Rejected):
            selectors.follow_up_list(status="soon")


def test_a_follow_up_in_the_past_or_by_another_tenant_is_refused(world):
    with pytest.raises(SessionError, match="in the future"):
        followups.follow_up_schedule(actor=world.tech, session=world.session, at=timezone.now() - timedelta(hours=1))
    stranger = factories.technician(factories.tenant())
    with pytest.raises(Forbidden):
        followups.follow_up_schedule(actor=stranger, session=world.session, at=timezone.now() + timedelta(hours=1))
    assert not FollowUp.all_tenants.exists()


def test_an_approved_follow_up_prompt_schedules_one_for_the_requester_once(world):
    at = timezone.now() + timedelta(days=2)
    sessions.follow_up_request(actor=world.tech, session=world.session, at=at, note="reboot after hours")
    prompt = world.session.prompts.model.all_tenants.get(session=world.session)
    with transaction.atomic(), world.bound():  # as the runtime's report binds it
        assert approvals.prompt_transition(
            prompt, PromptState.APPROVED, party=PromptParty.RUNTIME, decided_at=timezone.now(), decided_by="ann"
        )
        again = followups.follow_up_from_approval(prompt=prompt)  # a replayed approval
    follow_up = FollowUp.all_tenants.get()
    assert again.pk == follow_up.pk
    assert follow_up.assigned_to == world.tech and follow_up.due_at == at and follow_up.approved_prompt == prompt
    entry = TranscriptEntry.all_tenants.get(session=world.session, kind=K.SESSION_FOLLOW_UP_SCHEDULED)
    assert entry.actor == "runtime" and entry.data["approved_prompt"] == str(prompt.pk)


def test_the_reminder_goes_out_once_when_due(world, django_capture_on_commit_callbacks):
    follow_up = factories.follow_up(world.session, actor=world.tech, note="check backups")
    assert followups.follow_up_reminder_sweep() == 0  # not due yet
    FollowUp.all_tenants.filter(pk=follow_up.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):  # the e-mail goes after the commit
        assert followups.follow_up_reminder_sweep() == 1
        assert followups.follow_up_reminder_sweep() == 0  # idempotent: once
    follow_up.refresh_from_db()
    assert follow_up.reminded_at is not None and follow_up.status == FollowUpStatus.SCHEDULED
    assert kinds(world.session).count(K.SESSION_FOLLOW_UP_DUE) == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["tech@msp.example"] and "lap01" in mail.outbox[0].subject
    assert "check backups" in mail.outbox[0].body and "/follow-ups/" in mail.outbox[0].body
    with world.bound():
        assert selectors.follow_ups_due_count(assigned_to_id=world.tech.pk) == 1
        assert selectors.follow_ups_due_count(assigned_to_id=world.colleague.pk) == 0


def test_a_sweep_that_lost_the_race_reminds_nothing(world):
    follow_up = factories.follow_up(world.session, actor=world.tech, due=True)
    # Another sweep reminded it between this sweep's read and its write: the conditional update wins.
    FollowUp.all_tenants.filter(pk=follow_up.pk).update(reminded_at=timezone.now())
    assert followups.follow_up_reminder_sweep() == 0
    assert mail.outbox == [] and K.SESSION_FOLLOW_UP_DUE not in kinds(world.session)


def test_opening_opens_a_linked_session_once(world):
    follow_up = factories.follow_up(world.session, actor=world.tech, note="check backups", due=True)
    opened = followups.follow_up_open(actor=world.colleague, follow_up=follow_up)
    follow_up.refresh_from_db()
    assert follow_up.status == FollowUpStatus.OPENED and follow_up.opened_session == opened
    assert opened.endpoint_id == world.endpoint.pk and opened.opened_by == world.colleague
    assert "Follow-up of the session of" in opened.reason and "check backups" in opened.reason
    of = TranscriptEntry.all_tenants.get(session=opened, kind=K.SESSION_FOLLOW_UP_OF)
    assert of.data["earlier_session"] == str(world.session.pk)
    there = TranscriptEntry.all_tenants.get(session=world.session, kind=K.SESSION_FOLLOW_UP_OPENED)
    assert there.data["session"] == str(opened.pk)
    with world.bound():
        links = selectors.session_follow_ups(session=opened)
        assert links["follow_up_of"].pk == follow_up.pk
        assert selectors.session_follow_ups(session=world.session)["scheduled"][0].opened_session_id == opened.pk
    with pytest.raises(SessionError, match="already opened"):
        followups.follow_up_open(actor=world.tech, follow_up=follow_up)
    assert SupportSession.all_tenants.filter(endpoint=world.endpoint).count() == 2
    assert followups.follow_up_reminder_sweep() == 0  # opened before its reminder: no reminder


def test_another_tenant_cannot_open_or_see_it(world, client):
    follow_up = factories.follow_up(world.session, actor=world.tech, due=True)
    stranger = factories.technician(factories.tenant())
    with pytest.raises(Forbidden):
        followups.follow_up_open(actor=stranger, follow_up=follow_up)
    client.force_login(stranger)
    assert client.post(reverse("console:follow_up_open", args=[follow_up.pk])).status_code == 404
    assert str(follow_up.pk) not in client.get(reverse("console:follow_up_list") + "?who=all").content.decode()
    api = APIClient()
    _, token = factories.api_token(stranger)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.post(f"/api/v1/follow-ups/{follow_up.pk}/open/").status_code == 404
    assert api.get(f"/api/v1/follow-ups/{follow_up.pk}/").status_code == 404
    assert api.get("/api/v1/follow-ups/?assigned_to=all").json()["results"] == []
    assert FollowUp.all_tenants.get(pk=follow_up.pk).status == FollowUpStatus.SCHEDULED


def test_console_list_nav_reminder_open_and_both_session_pages(world, client):
    follow_up = factories.follow_up(world.session, actor=world.tech, note="check backups", due=True)
    client.force_login(world.tech)
    page = client.get(reverse("console:follow_up_list")).content.decode()
    assert f'data-follow-up="{follow_up.pk}"' in page and "check backups" in page and "<strong>due</strong>" in page
    assert 'data-field="follow-ups-due">1 due' in page  # the nav's reminder, on every console page
    assert reverse("console:follow_up_list") in client.get(reverse("console:session_list")).content.decode()
    response = client.post(reverse("console:follow_up_open", args=[follow_up.pk]))
    opened = FollowUp.all_tenants.get(pk=follow_up.pk).opened_session
    assert response.status_code == 302 and response.url == reverse("console:session_detail", args=[opened.pk])
    new_page = client.get(response.url).content.decode()
    assert reverse("console:session_detail", args=[world.session.pk]) in new_page and "Follow-up of" in new_page
    old_page = client.get(reverse("console:session_detail", args=[world.session.pk])).content.decode()
    assert reverse("console:session_detail", args=[opened.pk]) in old_page and "opened in" in old_page
    assert "follow-ups-due" not in old_page
    bad = client.get(reverse("console:follow_up_list") + "?status=soon", follow=True)
    assert "status must be one of: scheduled, due, opened, all" in bad.content.decode()


def test_api_lists_mine_and_the_tenants_and_opens(world):
    mine = factories.follow_up(world.session, actor=world.tech, due=True)
    theirs = factories.follow_up(world.session, actor=world.colleague)
    api = APIClient()
    _, token = factories.api_token(world.tech)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = api.get("/api/v1/follow-ups/").json()["results"]
    assert [r["id"] for r in listed] == [str(mine.pk)] and listed[0]["due"] is True
    everyone = api.get("/api/v1/follow-ups/?assigned_to=all").json()["results"]
    assert {r["id"] for r in everyone} == {str(mine.pk), str(theirs.pk)}
    assert [r["id"] for r in api.get("/api/v1/follow-ups/?status=due").json()["results"]] == [str(mine.pk)]
    assert api.get("/api/v1/follow-ups/?status=soon").status_code == 400
    opened = api.post(f"/api/v1/follow-ups/{mine.pk}/open/")
    assert opened.status_code == 201
    detail = api.get(f"/api/v1/follow-ups/{mine.pk}/").json()
    assert detail["status"] == "opened" and detail["opened_session"] == opened.json()["id"]
    assert api.post(f"/api/v1/follow-ups/{mine.pk}/open/").status_code == 400
