"""Wake or wait: an action wakes its endpoint now (default, today's behaviour) or waits for the
endpoint's next check-in without waking it; a waiting action can be woken now. The choice is on
the action, in the transcript, on the card and in the API; another tenant cannot wake anything."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from bridge import health, outbox
from bridge.models import OutboxMessage, OutboxStatus
from caisey import tenancy
from caisey.errors import Forbidden
from endpoints.models import AgentMode, Endpoint
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import (
    Action,
    ActionStatus,
    Prompt,
    PromptParty,
    PromptState,
    SupportSession,
    TranscriptEntry,
    WakeChoice,
)
from sessions_app.services import actions, approvals, sessions
from sessions_app.services.sessions import SessionError
from tests import factories

pytestmark = pytest.mark.django_db


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant()
        self.group = factories.client_group(self.tenant)
        self.endpoint = factories.endpoint(self.group, hostname="lap01").endpoint
        self.tech = factories.technician(self.tenant)
        # A lazy endpoint that beat 10 s ago at its lazy interval of 60 s.
        self.last_beat = timezone.now() - timedelta(seconds=10)
        Endpoint.all_tenants.filter(pk=self.endpoint.pk).update(
            last_seen_at=self.last_beat, heartbeat_interval=60.0, mode=AgentMode.LAZY
        )

    def mode(self) -> str:
        return Endpoint.all_tenants.get(pk=self.endpoint.pk).mode

    def mode_sets(self) -> list[str]:
        return [m.body["mode"] for m in OutboxMessage.all_tenants.filter(endpoint=self.endpoint, kind="mode.set")]

    def open(self, *, wake: bool):
        return sessions.session_open(actor=self.tech, endpoint=self.endpoint, reason="slow disk", wake=wake)


@pytest.fixture
def world():
    return World()


def entries(session, kind):
    return list(TranscriptEntry.all_tenants.filter(session=session, kind=kind).order_by("index"))


def test_default_wakes_the_endpoint_as_before(world):
    session = world.open(wake=True)
    action = actions.action_request(actor=world.tech, session=session, kind="system_summary", params={})
    assert action.wake == WakeChoice.NOW and world.mode() == AgentMode.ACTIVE
    row = OutboxMessage.all_tenants.get(pk=action.outbox_id)
    assert row.next_attempt_at <= timezone.now()
    assert entries(session, K.ACTION_QUEUED)[0].data["wake"] == "now"


def test_a_session_opened_without_waking_leaves_the_endpoint_lazy(world):
    session = world.open(wake=False)
    assert world.mode() == AgentMode.LAZY and world.mode_sets() == []
    assert entries(session, K.SESSION_OPENED)[0].data["wake"] is False


def test_waiting_action_is_held_until_the_next_check_in_and_never_wakes(world):
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    assert action.wake == WakeChoice.WAIT and action.status == ActionStatus.QUEUED
    assert world.mode() == AgentMode.LAZY and world.mode_sets() == []
    row = OutboxMessage.all_tenants.get(pk=action.outbox_id)
    # Held until the endpoint's next beat at its lazy cadence (last beat + 60 s).
    assert abs((row.next_attempt_at - (world.last_beat + timedelta(seconds=60))).total_seconds()) < 1
    # A doorbell now finds nothing due; the endpoint's check-in (a connect) takes it.
    assert outbox.outbox_claim(endpoint_id=world.endpoint.pk, due_only=True) == []
    OutboxMessage.all_tenants.filter(pk=row.pk).update(next_attempt_at=timezone.now())  # the check-in is due
    assert len(outbox.outbox_claim(endpoint_id=world.endpoint.pk, due_only=True)) == 1
    assert entries(session, K.ACTION_QUEUED)[0].data["wake"] == "wait"
    assert world.mode() == AgentMode.LAZY


def test_a_held_action_does_not_make_the_endpoint_look_degraded(world):
    """The hold is by design: the queue shows it waiting, but its age and latency start when due."""
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    row = OutboxMessage.all_tenants.get(pk=action.outbox_id)
    assert row.created_at == row.next_attempt_at > timezone.now()
    with tenancy.bind(world.tenant.pk):
        figures = health.health_for([world.endpoint.pk])[world.endpoint.pk]
    assert figures.queue_depth == 1 and figures.oldest_unacked_s == 0.0 and not figures.degraded_reasons


def test_an_overdue_endpoint_gets_a_waiting_action_at_once(world):
    Endpoint.all_tenants.filter(pk=world.endpoint.pk).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    assert OutboxMessage.all_tenants.get(pk=action.outbox_id).next_attempt_at <= timezone.now()
    assert world.mode() == AgentMode.LAZY


def test_wake_now_switches_the_endpoint_to_active_and_sends_at_once(world):
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    actions.action_wake(actor=world.tech, action=action)
    action.refresh_from_db()
    assert action.wake == WakeChoice.NOW and action.woken_at is not None
    assert world.mode() == AgentMode.ACTIVE and world.mode_sets() == ["active"]
    assert OutboxMessage.all_tenants.get(pk=action.outbox_id).next_attempt_at <= timezone.now()
    woken = entries(session, K.ACTION_WOKEN)
    assert len(woken) == 1 and woken[0].actor == f"user:{world.tech.username}"
    assert woken[0].data == {"was": "wait", "status": "queued", "sent_now": True}
    with pytest.raises(SessionError, match="already wakes"):
        actions.action_wake(actor=world.tech, action=action)
    assert len(entries(session, K.ACTION_WOKEN)) == 1


def test_wake_is_refused_for_an_action_that_already_went_out(world):
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    Action.all_tenants.filter(pk=action.pk).update(status=ActionStatus.RUNNING, dispatched_at=timezone.now())
    with pytest.raises(SessionError, match="already running"):
        actions.action_wake(actor=world.tech, action=action)
    assert world.mode() == AgentMode.LAZY


def test_an_unknown_wake_choice_is_refused_and_nothing_is_queued(world):
    session = world.open(wake=False)
    with pytest.raises(SessionError, match="wake must be one of"):
        actions.action_request(actor=world.tech, session=session, kind="system_summary", params={}, wake="soon")
    assert not Action.all_tenants.filter(session=session).exists()


def test_an_approved_waiting_action_still_waits_for_the_check_in(world):
    factories.policy(world.group, requires="everything")
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    assert action.status == ActionStatus.AWAITING_APPROVAL
    prompt = Prompt.all_tenants.get(action=action)
    with transaction.atomic(), tenancy.bind(world.tenant.pk):  # as the runtime's report binds it
        assert approvals.prompt_transition(
            prompt, PromptState.APPROVED, party=PromptParty.RUNTIME, decided_at=timezone.now(), decided_by="ann"
        )
    action.refresh_from_db()
    assert action.status == ActionStatus.QUEUED and world.mode() == AgentMode.LAZY
    assert OutboxMessage.all_tenants.get(pk=action.outbox_id).next_attempt_at > timezone.now()


def test_another_tenants_technician_cannot_wake(world):
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    stranger = factories.technician(factories.tenant())
    with pytest.raises(Forbidden):
        actions.action_wake(actor=stranger, action=action)
    assert Action.all_tenants.get(pk=action.pk).wake == WakeChoice.WAIT and world.mode() == AgentMode.LAZY


def test_console_form_card_and_wake_button(client, world):
    client.force_login(world.tech)
    client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"reason": "disk", "no_wake": "1"})
    assert world.mode() == AgentMode.LAZY
    session = SupportSession.all_tenants.get(endpoint=world.endpoint)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert 'name="wake" value="wait"' in page and 'value="now" checked' in page
    client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary", "wake": "wait"})
    action = Action.all_tenants.get(session=session)
    assert action.wake == WakeChoice.WAIT and world.mode() == AgentMode.LAZY
    card = client.get(reverse("console:action_fragment", args=[session.pk, action.pk])).content.decode()
    assert "waits for the endpoint's next check-in, not waking it" in card
    wake_url = reverse("console:action_wake", args=[session.pk, action.pk])
    assert wake_url in card
    client.post(wake_url)
    assert world.mode() == AgentMode.ACTIVE
    card = client.get(reverse("console:action_fragment", args=[session.pk, action.pk])).content.decode()
    assert "endpoint woken for it at" in card and wake_url not in card
    bad = client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary", "wake": "x"})
    assert bad.status_code == 302 and Action.all_tenants.filter(session=session).count() == 1
    client.post(reverse("console:action_run", args=[session.pk]), {"kind": "system_summary"})
    default = Action.all_tenants.filter(session=session).latest("created_at")
    assert default.wake == WakeChoice.NOW
    card = client.get(reverse("console:action_fragment", args=[session.pk, default.pk])).content.decode()
    assert "chosen: wake the endpoint now" in card and "Wake now</button>" not in card


def _api(user) -> APIClient:
    api = APIClient()
    _, token = factories.api_token(user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api


def test_api_queues_waiting_actions_wakes_them_and_hides_other_tenants(world):
    api = _api(world.tech)
    opened = api.post("/api/v1/sessions/", {"endpoint": str(world.endpoint.pk), "wake": False}, format="json")
    assert opened.status_code == 201 and world.mode() == AgentMode.LAZY
    session_id = opened.json()["id"]
    created = api.post(
        f"/api/v1/sessions/{session_id}/actions/",
        {"kind": "system_summary", "params": {}, "wake": "wait"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["wake"] == "wait" and body["woken_at"] is None and world.mode() == AgentMode.LAZY
    bad = api.post(
        f"/api/v1/sessions/{session_id}/actions/", {"kind": "system_summary", "params": {}, "wake": "x"}, format="json"
    )
    assert bad.status_code == 400 and Action.all_tenants.count() == 1
    stranger = _api(factories.technician(factories.tenant()))
    assert stranger.post(f"/api/v1/actions/{body['id']}/wake/").status_code == 404
    assert world.mode() == AgentMode.LAZY
    woken = api.post(f"/api/v1/actions/{body['id']}/wake/")
    assert woken.status_code == 200 and woken.json()["wake"] == "now" and woken.json()["woken_at"]
    assert world.mode() == AgentMode.ACTIVE
    again = api.post(f"/api/v1/actions/{body['id']}/wake/")
    assert again.status_code == 400
    default = api.post(
        f"/api/v1/sessions/{session_id}/actions/", {"kind": "system_summary", "params": {}}, format="json"
    )
    assert default.json()["wake"] == "now"
    woken_row = OutboxMessage.all_tenants.get(pk=Action.all_tenants.get(pk=body["id"]).outbox_id)
    assert woken_row.status == OutboxStatus.QUEUED and woken_row.next_attempt_at <= timezone.now()


def test_a_bulk_run_can_leave_every_endpoint_resting(world, client):
    other = factories.endpoint(world.group, hostname="lap02").endpoint
    Endpoint.all_tenants.filter(pk=other.pk).update(last_seen_at=world.last_beat, mode=AgentMode.LAZY)
    client.force_login(world.tech)
    page = client.get(reverse("console:endpoint_list")).content.decode()
    assert 'name="wake" value="wait"' in page and "about every 60 s" in page
    client.post(
        reverse("console:bulk_start"),
        {"endpoint": [str(world.endpoint.pk), str(other.pk)], "kind": "system_summary", "wake": "wait"},
    )
    queued = list(Action.all_tenants.filter(bulk_run__isnull=False))
    assert len(queued) == 2 and {a.wake for a in queued} == {WakeChoice.WAIT}
    assert set(Endpoint.all_tenants.filter(pk__in=[world.endpoint.pk, other.pk]).values_list("mode", flat=True)) == {
        AgentMode.LAZY
    }
    assert not OutboxMessage.all_tenants.filter(kind="mode.set").exists()
    api = _api(world.tech)
    body = {"kind": "system_summary", "params": {}, "endpoints": [str(other.pk)], "wake": "wait"}
    assert api.post("/api/v1/bulk-runs/", body, format="json").status_code == 201
    assert api.post("/api/v1/bulk-runs/", {**body, "wake": "x"}, format="json").status_code == 400
    assert Endpoint.all_tenants.get(pk=other.pk).mode == AgentMode.LAZY


def test_the_outbox_sweep_rings_for_a_waiting_action_only_once_it_is_due(world):
    session = world.open(wake=False)
    action = actions.action_request(
        actor=world.tech, session=session, kind="system_summary", params={}, wake=WakeChoice.WAIT
    )
    assert outbox.outbox_sweep()["doorbells"] == 0  # held until the check-in
    OutboxMessage.all_tenants.filter(pk=action.outbox_id).update(next_attempt_at=timezone.now())
    assert outbox.outbox_sweep()["doorbells"] == 1  # due: the connection serving it is rung
