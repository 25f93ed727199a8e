"""Approval prompts: gating, the three views, reconciliation rules, deadlines, escalation."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from bridge import outbox
from bridge.models import OutboxMessage
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import (
    Action,
    ActionStatus,
    ApprovalLinkVisit,
    Prompt,
    PromptState,
    PromptTransition,
    TranscriptEntry,
)
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts
from sessions_app.services import sessions
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = pytest.mark.django_db(transaction=True)


def world(requires="shell", deadline_s=300, approver="boss@client.example", user_logged_in=True, **policy):
    tenant = factories.tenant()
    group = factories.client_group(tenant, approver_email=approver)
    factories.policy(group, requires=requires, deadline_s=deadline_s, **policy)
    enrolled = factories.endpoint(group, hostname="fin-laptop")
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(
        last_seen_at=timezone.now(), machine_context={"user_logged_in": user_logged_in}
    )
    tech = factories.technician(tenant)
    session = sessions.session_open(actor=tech, endpoint=enrolled.endpoint, reason="T-9")
    return enrolled, tech, session


def shell(tech, session, command="ipconfig /flushdns") -> Action:
    return services.action_request(actor=tech, session=session, kind="shell", params={"command": command})


def prompt_of(action) -> Prompt:
    return Prompt.all_tenants.get(action=action)


def ack(prompt: Prompt) -> None:
    outbox.outbox_ack(endpoint_id=prompt.endpoint_id, message_id=prompt.outbox_id)


def runtime(enrolled, prompt, state, decided_at=None):
    services_body = p.PromptUpdate(
        prompt_id=str(prompt.pk),
        state=state,
        decided_at=decided_at.timestamp() if decided_at else None,
        decided_by="alice",
    )
    from django.db import transaction

    with transaction.atomic():
        prompts.prompt_runtime_update(endpoint=enrolled.endpoint, body=services_body)


def half_way(prompt: Prompt, share: float = 0.5) -> Prompt:
    """Move the prompt's issue time back so that ``share`` of its response deadline has passed."""
    span = prompt.deadline_at - prompt.created_at
    now = timezone.now()
    Prompt.all_tenants.filter(pk=prompt.pk).update(created_at=now - span * share, deadline_at=now + span * (1 - share))
    prompt.refresh_from_db()
    return prompt


def action_run_queued(action) -> bool:
    return OutboxMessage.all_tenants.filter(kind="action.run", ref_id=str(action.pk)).exists()


def test_gated_action_waits_for_approval_then_runs():
    enrolled, tech, session = world()
    diag = services.action_request(actor=tech, session=session, kind="system_summary", params={})
    assert diag.status == ActionStatus.QUEUED  # diagnostics are not gated by a shell-only policy
    action = shell(tech, session)
    action.refresh_from_db()
    assert action.status == ActionStatus.AWAITING_APPROVAL and not action_run_queued(action)
    prompt = prompt_of(action)
    assert prompt.state == PromptState.PENDING and "ipconfig /flushdns" in prompt.detail
    ack(prompt)
    assert prompt_of(action).state == PromptState.DELIVERED
    runtime(enrolled, prompt, "acknowledged")
    runtime(enrolled, prompt, "approved", timezone.now())
    prompt.refresh_from_db()
    action.refresh_from_db()
    assert prompt.state == PromptState.APPROVED and prompt.decided_by == "alice"
    assert action.status == ActionStatus.QUEUED and action_run_queued(action)
    parties = list(PromptTransition.all_tenants.filter(prompt=prompt).values_list("to_state", "party"))
    assert parties == [("delivered", "bridge"), ("acknowledged", "runtime"), ("approved", "runtime")]


def test_denied_prompt_never_runs_the_action():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    runtime(enrolled, prompt, "denied", timezone.now())
    action.refresh_from_db()
    assert prompt_of(action).state == PromptState.DENIED  # a decision is proof of delivery too
    assert action.status == ActionStatus.CANCELLED and not action_run_queued(action)


def test_cancel_racing_a_late_approval_keeps_cancelled_and_withdraws():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    decided = timezone.now()  # the user approved on the endpoint...
    prompts.prompt_cancel(actor=tech, prompt=prompt)  # ...while the technician cancelled
    runtime(enrolled, prompt, "approved", decided)  # the approval arrives late
    prompt.refresh_from_db()
    action.refresh_from_db()
    assert prompt.state == PromptState.CANCELLED and action.status == ActionStatus.CANCELLED
    assert not action_run_queued(action)
    assert TranscriptEntry.all_tenants.filter(session=session, kind="prompt.late_decision_ignored").exists()
    assert OutboxMessage.all_tenants.filter(kind="prompt.withdraw", ref_id=str(prompt.pk)).exists()


def test_a_second_different_decision_keeps_the_first_and_withdraws_the_runtime_copy():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    runtime(enrolled, prompt, "approved", timezone.now())
    runtime(enrolled, prompt, "approved", timezone.now())  # a replay changes nothing
    assert not OutboxMessage.all_tenants.filter(kind="prompt.withdraw", ref_id=str(prompt.pk)).exists()
    runtime(enrolled, prompt, "denied", timezone.now())  # a reinstalled runtime asked again
    assert prompt_of(action).state == PromptState.APPROVED
    withdraw = OutboxMessage.all_tenants.get(kind="prompt.withdraw", ref_id=str(prompt.pk))
    assert withdraw.body["reason"] == "approved"
    assert TranscriptEntry.all_tenants.filter(session=session, kind="prompt.late_decision_ignored").exists()


def test_a_decided_prompt_is_not_shown_again():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)  # its show was sent but never acked
    runtime(enrolled, prompt, "denied", timezone.now())
    show = OutboxMessage.all_tenants.get(pk=prompt.outbox_id)
    assert show.status == "cancelled"


def test_decision_made_before_the_deadline_is_honoured_when_it_arrives_late():
    enrolled, tech, session = world(deadline_s=60)
    action = shell(tech, session)
    prompt = prompt_of(action)
    ack(prompt)
    decided_in_time = prompt.deadline_at - timedelta(seconds=5)
    Prompt.all_tenants.filter(pk=prompt.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    prompt.refresh_from_db()
    decided_in_time = prompt.deadline_at - timedelta(seconds=5)
    assert prompts.prompt_deadline_sweep() == 1
    action.refresh_from_db()
    assert prompt_of(action).state == PromptState.EXPIRED and action.status == ActionStatus.EXPIRED
    runtime(enrolled, prompt, "approved", decided_in_time)
    assert prompt_of(action).state == PromptState.APPROVED
    # The action expired with the prompt and stays so (a final state never reopens); the honoured
    # approval runs the request again as a new action linked to it.
    action.refresh_from_db()
    assert action.status == ActionStatus.EXPIRED and not action_run_queued(action)
    rerun = Action.all_tenants.get(rerun_of=action)
    assert action_run_queued(rerun)


def test_decision_after_the_deadline_is_ignored():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    Prompt.all_tenants.filter(pk=prompt.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    prompts.prompt_deadline_sweep()
    runtime(enrolled, prompt, "approved", timezone.now())
    assert prompt_of(action).state == PromptState.EXPIRED


def test_reissue_supersedes_and_the_old_prompt_never_resolves():
    enrolled, tech, session = world()
    action = shell(tech, session)
    old = prompt_of(action)
    ack(old)
    new = prompts.prompt_reissue(actor=tech, prompt=old)
    old.refresh_from_db()
    assert old.state == PromptState.SUPERSEDED and old.superseded_by_id == new.pk
    runtime(enrolled, old, "approved", timezone.now())
    action.refresh_from_db()
    assert action.status == ActionStatus.AWAITING_APPROVAL and not action_run_queued(action)
    runtime(enrolled, new, "approved", timezone.now())
    action.refresh_from_db()
    assert action.status == ActionStatus.QUEUED and action_run_queued(action)


def test_batch_is_covered_by_one_prompt_and_runs_in_order():
    enrolled, tech, session = world()
    batch = services.batch_request(
        actor=tech,
        session=session,
        items=[
            ("system_summary", {}),
            ("shell", {"command": "systemctl restart erp"}),
            ("service_status", {"service": "erp"}),
        ],
    )
    assert Prompt.all_tenants.filter(batch=batch).count() == 1
    prompt = Prompt.all_tenants.get(batch=batch)
    assert "systemctl restart erp" in prompt.detail
    runtime(enrolled, prompt, "approved", timezone.now())
    first, second, third = Action.all_tenants.filter(batch=batch).order_by("batch_position")
    assert action_run_queued(first) and not action_run_queued(second) and not action_run_queued(third)
    services.action_result_receive(
        endpoint=enrolled.endpoint, body=p.ActionResult(action_id=str(first.pk), status="succeeded", exit_code=0)
    )
    assert action_run_queued(second) and not action_run_queued(third)


def test_cancelling_a_gated_action_cancels_its_prompt():
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = prompt_of(action)
    services.action_cancel(actor=tech, action=action)
    prompt.refresh_from_db()
    assert prompt.state == PromptState.CANCELLED and prompt.state_changed_by == "console"
    runtime(enrolled, prompt, "approved", timezone.now())  # the user's late yes runs nothing
    action.refresh_from_db()
    assert action.status == ActionStatus.CANCELLED and not action_run_queued(action)


def test_cancelling_the_first_step_of_a_batch_awaiting_approval_stops_the_whole_batch():
    enrolled, tech, session = world()
    batch = services.batch_request(
        actor=tech,
        session=session,
        items=[
            ("shell", {"command": "whoami"}),
            ("shell", {"command": "systemctl restart erp"}),
        ],
    )
    first, second = Action.all_tenants.filter(batch=batch).order_by("batch_position")
    prompt = Prompt.all_tenants.get(batch=batch)
    services.action_cancel(actor=tech, action=first)
    prompt.refresh_from_db()
    second.refresh_from_db()
    assert prompt.state == PromptState.CANCELLED
    assert second.status == ActionStatus.CANCELLED
    runtime(enrolled, prompt, "approved", timezone.now())
    assert not action_run_queued(first) and not action_run_queued(second)


@pytest.mark.asyncio
async def test_reconciliation_replays_missing_and_withdraws_ended_prompts():
    enrolled, tech, session = await database_sync_to_async(world)()
    a1 = await database_sync_to_async(shell)(tech, session, "whoami")
    a2 = await database_sync_to_async(shell)(tech, session, "hostname")
    p1, p2 = await database_sync_to_async(prompt_of)(a1), await database_sync_to_async(prompt_of)(a2)
    await database_sync_to_async(ack)(p1)
    await database_sync_to_async(ack)(p2)
    await database_sync_to_async(prompts.prompt_cancel)(actor=tech, prompt=p2)
    agent = FakeAgent()
    await agent.connect()
    # The runtime lost p1 (say, a restored disk image) and still shows p2.
    await agent.hello(
        enrolled.endpoint.pk, enrolled.credential, prompts=[p.PromptReport(prompt_id=str(p2.pk), state="delivered")]
    )
    seen = {}
    for _ in range(12):
        env = await agent.recv(timeout=5)
        if env.type in ("prompt.show", "prompt.withdraw"):
            seen[env.type] = env.body.prompt_id
        if len(seen) == 2:
            break
    assert seen.get("prompt.show") == str(p1.pk)
    assert seen.get("prompt.withdraw") == str(p2.pk)
    await agent.close()


def test_escalation_link_is_single_use_and_every_visit_is_logged(client):
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = half_way(prompt_of(action))  # the user at the endpoint had half the deadline first
    prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["boss@client.example"]
    url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[0].body).group(1)
    page = client.get(url)
    assert page.status_code == 200 and "ipconfig /flushdns" in page.content.decode()
    done = client.post(url, {"decision": "approve"}, REMOTE_ADDR="203.0.113.9")
    assert done.status_code == 200
    prompt.refresh_from_db()
    assert prompt.state == PromptState.APPROVED and prompt.state_changed_by == "approver"
    assert prompt.decided_by == "approver:boss@client.example"
    again = client.post(url, {"decision": "deny"})
    assert again.status_code == 404 and "not valid" in again.content.decode()
    assert prompt_of(action).state == PromptState.APPROVED
    outcomes = list(ApprovalLinkVisit.all_tenants.order_by("at").values_list("outcome", flat=True))
    assert outcomes == ["viewed", "approved", "refused"]
    assert client.get(reverse("approval_link", args=["apl_wrong"])).status_code == 404


def _origin_a_browser_sends(page_html: str, origin: str) -> str:
    """The Origin header a browser puts on a same-origin form POST from this page (Fetch
    standard, "append a request Origin header"): "null" under the no-referrer policy."""
    policy = re.search(r'<meta name="referrer" content="([^"]+)"', page_html)
    return "null" if policy and policy.group(1) == "no-referrer" else origin


def test_approver_can_post_the_form_with_csrf_checks_as_a_browser_does():
    """The approval page's form passes Django's CSRF check with the Origin a browser sends: a
    no-referrer policy made browsers send "Origin: null", and every approval was refused (403)."""
    from django.test import Client

    enrolled, tech, session = world()
    prompt = half_way(prompt_of(shell(tech, session)))
    prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[0].body).group(1)
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(url).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    done = browser.post(
        url,
        {"decision": "approve", "csrfmiddlewaretoken": csrf},
        HTTP_ORIGIN=_origin_a_browser_sends(page, "http://testserver"),
    )
    assert done.status_code == 200, done.content.decode()[:300]
    assert prompt_of(prompt.action).state == PromptState.APPROVED
    # Still no Referer, with the token in it, for other sites.
    assert '<meta name="referrer" content="same-origin">' in page


def test_escalation_refused_without_approver():
    enrolled, tech, session = world(approver="")
    prompt = prompt_of(shell(tech, session))
    with pytest.raises(prompts.PromptError, match="designated approver"):
        prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")


def test_escalation_waits_for_the_policy_share_of_the_deadline():
    """The defect: a technician escalated 2 s after issuing; the user at the endpoint answers first."""
    enrolled, tech, session = world(deadline_s=600, escalate_after_percent=50)
    prompt = prompt_of(shell(tech, session))
    with pytest.raises(prompts.PromptError, match=r"escalation opens at \d\d:\d\d:\d\d \(50% of the response"):
        prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    assert not mail.outbox and prompt_of(prompt.action).escalated_at is None
    half_way(prompt, 0.4)
    with pytest.raises(prompts.PromptError, match="answers first"):
        prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    half_way(prompt, 0.5)
    prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    assert len(mail.outbox) == 1


def test_the_prompt_card_says_when_escalation_opens(client):
    enrolled, tech, session = world(deadline_s=600)
    prompt = prompt_of(shell(tech, session))
    client.force_login(tech)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert re.search(r"The user at the endpoint answers first: escalation opens at \d\d:\d\d:\d\d", page)
    half_way(prompt)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "escalation opens at" not in page
    assert "Escalate to the client" in page


def test_escalation_share_is_per_policy():
    enrolled, tech, session = world(escalate_after_percent=0)
    prompts.prompt_escalate(actor=tech, prompt=prompt_of(shell(tech, session)), base_url="http://testserver")
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("presence", [False, None])
def test_nobody_logged_in_and_approval_without_user_not_allowed_refuses_escalation(presence):
    """The defect: allow_without_user=False was never read. No user (or no report of one) at the
    endpoint: the prompt cannot go to the approver, however late."""
    enrolled, tech, session = world(user_logged_in=presence, allow_without_user=False)
    prompt = half_way(prompt_of(shell(tech, session)), 0.9)
    with pytest.raises(prompts.PromptError, match="nobody is logged in"):
        prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    assert not mail.outbox


def test_nobody_logged_in_and_approval_without_user_allowed_escalates_at_once():
    enrolled, tech, session = world(user_logged_in=False, allow_without_user=True)
    prompts.prompt_escalate(actor=tech, prompt=prompt_of(shell(tech, session)), base_url="http://testserver")
    assert len(mail.outbox) == 1


def test_approver_decision_refused_when_the_user_logged_off_and_policy_needs_one(client):
    """allow_without_user is enforced at the decision too: escalated while someone was logged in,
    the approver's click after they logged off does not run the command."""
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompt = half_way(prompt_of(action))
    prompts.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[0].body).group(1)
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(machine_context={"user_logged_in": False})
    done = client.post(url, {"decision": "approve"})
    assert done.status_code == 404
    assert prompt_of(action).state != PromptState.APPROVED
    assert not action_run_queued(action)
    assert list(ApprovalLinkVisit.all_tenants.values_list("outcome", flat=True)) == ["refused"]


def test_approver_may_still_deny_with_nobody_logged_in(client):
    enrolled, tech, session = world()
    action = shell(tech, session)
    prompts.prompt_escalate(actor=tech, prompt=half_way(prompt_of(action)), base_url="http://testserver")
    url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[0].body).group(1)
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(machine_context={"user_logged_in": False})
    assert client.post(url, {"decision": "deny"}).status_code == 200
    assert prompt_of(action).state == PromptState.DENIED


def test_approver_decision_without_user_is_taken_when_the_policy_allows_it(client):
    enrolled, tech, session = world(user_logged_in=False, allow_without_user=True)
    action = shell(tech, session)
    prompts.prompt_escalate(actor=tech, prompt=prompt_of(action), base_url="http://testserver")
    url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[0].body).group(1)
    assert client.post(url, {"decision": "approve"}).status_code == 200
    assert prompt_of(action).state == PromptState.APPROVED


def test_the_prompt_names_the_shell_that_will_run_the_command():
    enrolled, tech, session = world()
    default = shell(tech, session)
    assert prompt_of(default).detail == "shell command (the endpoint's default shell): ipconfig /flushdns"
    chosen = services.action_request(
        actor=tech, session=session, kind="shell", params={"command": "net stop spooler", "shell": "cmd"}
    )
    assert prompt_of(chosen).detail == "shell command (cmd): net stop spooler"


def test_a_decision_first_seen_in_a_heartbeat_report_names_who_decided():
    """The report (hello, heartbeat) can reach the server before the prompt.update of the same
    decision: the record names the person either way (it used to say "by the user")."""
    enrolled, tech, session = world()
    prompt = prompt_of(shell(tech, session))
    ack(prompt)
    report = p.PromptReport(prompt_id=str(prompt.pk), state="approved", decided_at=time.time(), decided_by="alice")
    prompts.prompt_runtime_report(endpoint=enrolled.endpoint, reports=[report])
    prompt.refresh_from_db()
    assert prompt.state == PromptState.APPROVED and prompt.decided_by == "alice"
