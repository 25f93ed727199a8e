"""Issue 10, items 3 and 4: prompts never spin (an undeliverable prompt says "could not reach
endpoint" as soon as the endpoint is known to be away; a prompt held by a sleeping endpoint says
so), and late approvals are honoured (a decision made on the endpoint before the deadline runs
its request when it arrives, or the card says why not and offers to run it with the recorded
approval; a decision made after the deadline is refused as late and says so)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from bridge import outbox
from bridge.models import OutboxMessage, OutboxStatus
from caisey.errors import Conflict, Forbidden, Rejected
from caisey_agent import protocol as p
from endpoints.models import Endpoint, Role
from sessions_app.models import (
    Action,
    ActionStatus,
    Prompt,
    PromptState,
    PromptTransition,
    SessionStatus,
    TranscriptEntry,
)
from sessions_app.selectors import approvals as selectors
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts
from sessions_app.services import sessions
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)
S = PromptState


def world(*, online=True, deadline_s=300, allow_escalation=True):
    tenant = factories.tenant()
    group = factories.client_group(tenant, approver_email="boss@client.example")
    factories.policy(group, requires="shell", deadline_s=deadline_s, allow_escalation=allow_escalation)
    enrolled = factories.endpoint(group, hostname="fin-laptop")
    if online:
        Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(last_seen_at=timezone.now())
    tech = factories.technician(tenant)
    session = sessions.session_open(actor=tech, endpoint=enrolled.endpoint, reason="T-10")
    return enrolled, tech, session


def shell(tech, session, command="ipconfig /flushdns", **kwargs) -> Action:
    return services.action_request(actor=tech, session=session, kind="shell", params={"command": command}, **kwargs)


def prompt_of(action) -> Prompt:
    return Prompt.all_tenants.get(action=action)


def ack(prompt: Prompt) -> None:
    outbox.outbox_ack(endpoint_id=prompt.endpoint_id, message_id=prompt.outbox_id)


def goes_away(enrolled, *, seconds_ago: float = 0) -> None:
    """The agent's socket closed (a killed agent, a laptop lid)."""
    at = timezone.now() - timedelta(seconds=seconds_ago)
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(last_seen_at=at, disconnected_at=at)


def comes_back(enrolled) -> None:
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(last_seen_at=timezone.now(), disconnected_at=None)


def runtime(enrolled, prompt, state, decided_at=None):
    body = p.PromptUpdate(
        prompt_id=str(prompt.pk),
        state=state,
        decided_at=decided_at.timestamp() if decided_at else None,
        decided_by="alice",
    )
    with transaction.atomic():
        prompts.prompt_runtime_update(endpoint=enrolled.endpoint, body=body)


def expire(prompt) -> None:
    """The deadline passes and the sweep expires the prompt (and the request it held)."""
    Prompt.all_tenants.filter(pk=prompt.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert prompts.prompt_deadline_sweep() == 1
    prompt.refresh_from_db()


def move_into(prompt, state) -> PromptTransition:
    return PromptTransition.all_tenants.filter(prompt=prompt, to_state=state).latest("id")


def kinds(session) -> list[str]:
    return list(TranscriptEntry.all_tenants.filter(session=session).values_list("kind", flat=True))


def card(session, prompt):
    from caisey import tenancy

    with tenancy.bind(session.tenant_id):
        return selectors.session_prompt_card(session_id=session.pk, prompt_id=prompt.pk)


def runs_of(action_ids) -> list[str]:
    return list(
        OutboxMessage.all_tenants.filter(kind="action.run", ref_id__in=[str(a) for a in action_ids]).values_list(
            "ref_id", flat=True
        )
    )


# --- 3. prompts never spin ------------------------------------------------------------------------


def test_a_prompt_for_an_offline_endpoint_says_could_not_reach_at_once():
    enrolled, tech, session = world(online=False)
    prompt = prompt_of(shell(tech, session))
    assert prompt.state == S.FAILED_TO_DELIVER
    move = move_into(prompt, S.FAILED_TO_DELIVER)
    assert move.party == "bridge" and move.detail.startswith("could not reach endpoint")
    c = card(session, prompt)
    assert c.condition == "unreachable" and "could not reach endpoint" in c.note
    # Its show keeps waiting: when the endpoint returns before the deadline it is delivered.
    assert OutboxMessage.all_tenants.get(pk=prompt.outbox_id).status == OutboxStatus.QUEUED
    comes_back(enrolled)
    ack(prompt)
    assert prompt_of(prompt.action).state == S.DELIVERED


def test_the_reach_sweep_says_so_when_the_endpoint_goes_away_after_the_prompt():
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    assert prompt.state == S.PENDING
    assert prompts.prompt_reach_sweep() == 0  # online and just sent: still on its way
    goes_away(enrolled)
    assert prompts.prompt_reach_sweep() == 1
    prompt.refresh_from_db()
    assert prompt.state == S.FAILED_TO_DELIVER
    assert "offline since" in move_into(prompt, S.FAILED_TO_DELIVER).detail
    assert "prompt.failed_to_deliver" in kinds(session)
    assert prompts.prompt_reach_sweep() == 0  # said once


def test_delivery_failing_to_a_connected_but_silent_agent_says_could_not_reach():
    """A frozen agent keeps its socket: the show was sent, no ack came within the ack timeout."""
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    assert outbox.outbox_claim(endpoint_id=enrolled.endpoint.pk)  # sent once, never acknowledged
    assert prompts.prompt_reach_sweep() == 0  # within the ack timeout: still on its way
    Prompt.all_tenants.filter(pk=prompt.pk).update(created_at=timezone.now() - timedelta(seconds=11))
    assert prompts.prompt_reach_sweep() == 1
    prompt.refresh_from_db()
    assert prompt.state == S.FAILED_TO_DELIVER
    assert "no acknowledgement" in move_into(prompt, S.FAILED_TO_DELIVER).detail


def test_resend_escalate_and_cancel_are_offered_for_an_unreachable_prompt(client):
    enrolled, tech, session = world(online=False)
    prompt = prompt_of(shell(tech, session))
    client.force_login(tech)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "Could not reach endpoint" in page
    for button in ("Resend", "Cancel", "Escalate to the client's approver"):
        assert f">{button}</button>" in page, button
    fragment = client.get(reverse("console:prompt_fragment", args=[session.pk, prompt.pk])).content.decode()
    assert 'data-condition="unreachable"' in fragment and ">Resend</button>" in fragment


def test_resend_of_a_waiting_show_makes_it_due_now_and_records_who():
    enrolled, tech, session = world(online=False)
    prompt = prompt_of(shell(tech, session))
    show = OutboxMessage.all_tenants.get(pk=prompt.outbox_id)
    OutboxMessage.all_tenants.filter(pk=show.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    prompts.prompt_resend(actor=tech, prompt=prompt)
    prompt.refresh_from_db()
    show.refresh_from_db()
    assert prompt.state == S.PENDING and show.status == OutboxStatus.QUEUED
    assert show.next_attempt_at <= timezone.now()
    assert PromptTransition.all_tenants.filter(
        prompt=prompt, to_state=S.PENDING, detail__contains=tech.get_username()
    ).exists()


def test_a_prompt_held_by_an_endpoint_that_went_to_sleep_says_so_until_it_wakes():
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    ack(prompt)
    assert card(session, prompt).condition == ""
    goes_away(enrolled, seconds_ago=3)
    c = card(session, prompt)
    assert prompt_of(prompt.action).state == S.DELIVERED  # the ledger is unchanged: the runtime holds it
    assert c.condition == "asleep" and c.note.startswith("held on the endpoint, endpoint asleep since")
    assert c.away_since is not None and c.watch_presence
    assert prompts.prompt_reach_sweep() == 0  # held, not undeliverable
    comes_back(enrolled)
    c = card(session, prompt)
    assert c.condition == "" and c.prompt.state == S.DELIVERED


def test_after_the_deadline_a_prompt_still_held_asleep_is_not_shown_as_final():
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    ack(prompt)
    goes_away(enrolled, seconds_ago=30)
    expire(prompt)
    c = card(session, prompt)
    assert c.prompt.state == S.EXPIRED and c.condition == "expired_held"
    assert "honoured when it wakes" in c.note
    comes_back(enrolled)  # it woke after the deadline: whatever it held has been reported
    assert card(session, prompt).condition == ""


# --- 4. late approvals honoured ------------------------------------------------------------------


def test_an_approval_made_in_time_but_reported_late_runs_the_request_again(client):
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    expire(prompt)
    action.refresh_from_db()
    assert action.status == ActionStatus.EXPIRED
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=5))
    prompt.refresh_from_db()
    action.refresh_from_db()
    assert prompt.state == S.APPROVED and prompt.reported_at > prompt.deadline_at
    assert action.status == ActionStatus.EXPIRED  # a final state never reopens...
    rerun = Action.all_tenants.get(rerun_of=action)  # ...the request runs again, linked to it
    assert rerun.status == ActionStatus.QUEUED and rerun.params == action.params
    assert runs_of([rerun.pk]) == [str(rerun.pk)] and runs_of([action.pk]) == []
    assert prompt.approval_used_by == "runtime" and not prompt.late_not_run
    record = kinds(session)
    for kind in ("prompt.approved", "prompt.late_decision_honoured", "prompt.recorded_approval_used"):
        assert kind in record, kind
    approved = TranscriptEntry.all_tenants.get(session=session, kind="action.approved", action=rerun)
    assert approved.data["recorded_approval"] and approved.data["rerun_of"] == str(action.pk)
    c = card(session, prompt)
    assert c.honoured_late and c.reruns == [rerun] and not c.can_run_now
    client.force_login(tech)
    fragment = client.get(reverse("console:prompt_fragment", args=[session.pk, prompt.pk])).content.decode()
    assert "after the prompt had expired here: honoured" in fragment
    assert f'href="#action-{rerun.pk}"' in fragment and "as soon as it arrived" in fragment
    from caisey import tenancy

    with tenancy.bind(session.tenant_id):  # as the API shows it
        shown = selectors.approval_covering(action_id=action.pk)
    assert shown["reported_at"] == prompt.reported_at and shown["approval_used_by"] == "runtime"
    # The same decision reported again (a heartbeat) changes nothing.
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=5))
    assert Action.all_tenants.filter(rerun_of=action).count() == 1


def test_a_late_approved_batch_runs_again_in_order():
    enrolled, tech, session = world()
    batch = services.batch_request(
        actor=tech,
        session=session,
        items=[("shell", {"command": "systemctl restart erp"}), ("service_status", {"service": "erp"})],
    )
    prompt = Prompt.all_tenants.get(batch=batch)
    ack(prompt)
    expire(prompt)
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=1))
    reruns = list(Action.all_tenants.filter(rerun_of__batch=batch).order_by("batch_position"))
    assert [a.kind for a in reruns] == ["shell", "service_status"]
    assert reruns[0].batch_id == reruns[1].batch_id != batch.pk
    assert runs_of([a.pk for a in reruns]) == [str(reruns[0].pk)]  # the next step waits its turn


def test_a_late_approval_that_cannot_run_says_why_and_offers_the_recorded_approval(client):
    enrolled, tech, session = world()
    action = shell(tech, session, expires_in=timedelta(seconds=30))
    prompt = prompt_of(action)
    ack(prompt)
    expire(prompt)
    Action.all_tenants.filter(pk=action.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=5))
    prompt.refresh_from_db()
    assert prompt.state == S.APPROVED and prompt.late_not_run.startswith("its queue expiry passed")
    assert not Action.all_tenants.filter(rerun_of=action).exists()
    assert "prompt.late_approval_not_run" in kinds(session)
    assert card(session, prompt).can_run_now
    client.force_login(tech)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "Not run again by itself: its queue expiry passed" in page
    assert ">Run it now with the recorded approval</button>" in page
    client.post(reverse("console:prompt_run_approved", args=[session.pk, prompt.pk]))
    rerun = Action.all_tenants.get(rerun_of=action)
    assert runs_of([rerun.pk]) == [str(rerun.pk)]
    prompt.refresh_from_db()
    assert prompt.approval_used_by == f"user:{tech.get_username()}"
    used = TranscriptEntry.all_tenants.get(session=session, kind="prompt.recorded_approval_used")
    assert used.actor == f"user:{tech.get_username()}" and used.data["actions"] == [str(rerun.pk)]
    assert not card(session, prompt).can_run_now


def test_a_late_approval_for_a_closed_session_says_why_and_runs_nothing():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    expire(prompt)
    sessions.session_close(actor=tech, session=session, reason="fixed otherwise")
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=5))
    prompt.refresh_from_db()
    assert prompt.state == S.APPROVED and prompt.late_not_run == "the session was closed"
    assert not Action.all_tenants.filter(rerun_of=action).exists()
    assert not card(session, prompt).can_run_now
    with pytest.raises(Rejected, match="session was closed"):
        prompts.prompt_run_with_recorded_approval(actor=tech, prompt=prompt)


def test_a_decision_made_after_the_deadline_stays_refused_as_late_and_says_so(client):
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    expire(prompt)
    too_late = prompt.deadline_at + timedelta(seconds=2)
    runtime(enrolled, prompt, "approved", too_late)
    runtime(enrolled, prompt, "approved", too_late)  # reported again by a heartbeat
    prompt.refresh_from_db()
    assert prompt.state == S.EXPIRED and prompt.late_decision == "approved"
    assert not Action.all_tenants.filter(rerun_of=action).exists()
    assert kinds(session).count("prompt.late_decision_ignored") == 1
    ignored = TranscriptEntry.all_tenants.get(session=session, kind="prompt.late_decision_ignored")
    assert ignored.data["why"] == "decided after the deadline"
    client.force_login(tech)
    fragment = client.get(reverse("console:prompt_fragment", args=[session.pk, prompt.pk])).content.decode()
    assert "A decision (approved) made on the endpoint at" in fragment and "was refused as late" in fragment


def test_a_decision_after_the_deadline_is_refused_even_before_the_sweep_expired_the_prompt():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    Prompt.all_tenants.filter(pk=prompt.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    prompt.refresh_from_db()
    runtime(enrolled, prompt, "approved", timezone.now())  # the sweep has not run yet
    prompt.refresh_from_db()
    action.refresh_from_db()
    assert prompt.state == S.EXPIRED and prompt.late_decision == "approved"
    assert action.status == ActionStatus.EXPIRED and runs_of([action.pk]) == []


# --- the recorded approval: who may use it, and only once -------------------------------------------


def _not_run_late_approval():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    expire(prompt)
    Action.all_tenants.filter(pk=action.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    runtime(enrolled, prompt, "approved", prompt.deadline_at - timedelta(seconds=5))
    prompt.refresh_from_db()
    return enrolled, tech, session, action, prompt


def test_run_with_recorded_approval_checks_tenant_and_role_and_refuses_a_second_use():
    enrolled, tech, session, action, prompt = _not_run_late_approval()
    outsider = factories.technician(factories.tenant())
    with pytest.raises(Forbidden):
        prompts.prompt_run_with_recorded_approval(actor=outsider, prompt=prompt)
    viewer = factories.member(session.tenant, role=Role.VIEWER).user
    with pytest.raises(Forbidden):
        prompts.prompt_run_with_recorded_approval(actor=viewer, prompt=prompt)
    assert not Action.all_tenants.filter(rerun_of=action).exists()
    reruns = prompts.prompt_run_with_recorded_approval(actor=tech, prompt=prompt)
    assert [a.rerun_of_id for a in reruns] == [action.pk]
    colleague = factories.technician(session.tenant)
    with pytest.raises(Conflict, match="already used"):
        prompts.prompt_run_with_recorded_approval(actor=colleague, prompt=prompt)
    assert Action.all_tenants.filter(rerun_of=action).count() == 1


def test_run_with_recorded_approval_refuses_an_approval_that_was_not_late():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    runtime(enrolled, prompt, "approved", timezone.now())
    with pytest.raises(Rejected, match="only an approval that reached the server after"):
        prompts.prompt_run_with_recorded_approval(actor=tech, prompt=prompt_of(action))


def test_run_now_of_an_unknown_or_other_sessions_prompt_is_not_found(client):
    enrolled, tech, session, action, prompt = _not_run_late_approval()
    _, other_tech, other_session = world()
    client.force_login(other_tech)
    response = client.post(reverse("console:prompt_run_approved", args=[other_session.pk, prompt.pk]))
    assert response.status_code == 404
    assert SessionStatus.OPEN == session.status and not Action.all_tenants.filter(rerun_of=action).exists()


def test_a_runtime_report_of_a_held_prompt_rings_its_card(monkeypatch):
    """Back from sleep, the runtime's hello lists what it holds: the card re-renders its live state."""
    from sessions_app.services import prompting

    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    ack(prompt)
    rung = []
    monkeypatch.setattr(
        prompting.notify, "console_event", lambda **kw: rung.append((kw["event"], kw["payload"]["prompt_id"]))
    )
    prompts.prompt_runtime_report(
        endpoint=enrolled.endpoint, reports=[p.PromptReport(prompt_id=str(prompt.pk), state="delivered")]
    )
    assert ("prompt.state", str(prompt.pk)) in rung


def test_an_agent_that_just_reconnected_gets_the_ack_timeout_before_delivery_counts_as_failing():
    """After a server restart the shows go out again with each agent's hello: not 'could not reach'."""
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    assert outbox.outbox_claim(endpoint_id=enrolled.endpoint.pk)
    Prompt.all_tenants.filter(pk=prompt.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(connected_at=timezone.now())
    assert prompts.prompt_reach_sweep() == 0
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(connected_at=timezone.now() - timedelta(seconds=11))
    assert prompts.prompt_reach_sweep() == 1
