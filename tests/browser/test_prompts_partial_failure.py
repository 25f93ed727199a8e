"""Issue 10, items 3 and 4, in a real Chromium against a real stack and real `caisey-agent`
processes: a prompt to an endpoint that went away says "could not reach endpoint" by itself,
with resend, escalate and cancel; a prompt held by a laptop that went to sleep says so, and a
decision its user made there before the deadline is honoured when the laptop wakes after it,
its command running then. The page is never reloaded for these changes (checked).

How the sleeping laptop is made: the agent process is frozen with SIGSTOP (its socket stays
open, nothing is sent or read, as with a suspended machine). The user then approves with
`caisey-agent prompts approve`, a separate process writing the agent's own SQLite, as the
desktop dialog's decision would be written: the decision carries the runtime's time, before the
deadline, but the frozen agent cannot report it. The deadline passes, the console expires the
prompt; SIGCONT wakes the agent, which reports the decision late.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.browser import support
from tests.browser.support import (
    action_card,
    assert_not_reloaded,
    log_in,
    mark_page,
    open_session,
    run_shell,
    start_agent,
)
from tests.e2e import helpers as h
from tests.e2e.stack import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

DEADLINE_S = 40


@pytest.fixture(scope="module")
def stack(redis_server, browser):
    """Like tests/browser/conftest.py's stack, with a quick heartbeat (2 s at the active cadence,
    offline after two missed beats and 3 s of grace) so that a frozen agent is known to be away
    well within a prompt's deadline; and a client group `late` whose shell commands need the
    user's approval within DEADLINE_S, escalating to a designated approver."""
    s = Stack(extra_env={"CAISEY_HEARTBEAT_ACTIVE_S": "2", "CAISEY_PRESENCE_GRACE_S": "3"})
    try:
        s.port = s.start_server()
        s.worker = s.start_worker()
        s.login = s.seed(group="late")
        s.django(
            "from endpoints.models import ClientGroup;"
            "ClientGroup.all_tenants.filter(slug='late').update(approver_email='boss@client.example')"
        )
        # The agents here report nobody logged in (no desktop session on a test machine): the
        # approver may decide without a user, so the prompt can be escalated at once.
        s.django(h.set_policy("late", "shell", deadline_s=DEADLINE_S, without_user=True))
        s.base_url = f"http://127.0.0.1:{s.port}"
    except BaseException:
        print(s.logs())
        s.cleanup()
        raise
    try:
        yield s
    finally:
        s.cleanup()


def prompt_card(page):
    cards = page.locator("#prompt-list .prompt")
    support.expect()(cards).to_have_count(1)
    return cards.first


def test_undeliverable_prompt_says_could_not_reach_with_resend_escalate_cancel(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "gone01", "late")
    log_in(page, stack)
    open_session(page, agent.endpoint_id, "INC-3 printer queue stuck")

    agent.proc.send_signal(signal.SIGSTOP)  # frozen: its socket stays open, it neither acks nor beats
    shell = run_shell(page, "echo never-delivered")
    prompt = prompt_card(page)
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    state = prompt.locator("[data-field=state]")
    # Pending, then "could not reach endpoint" by itself: the show was not acknowledged within the
    # ack timeout, or the endpoint's presence went offline, whichever the console learnt first.
    expect(state).to_have_text("Could not reach endpoint", timeout=45_000)
    expect(state).to_have_class(re.compile(r"\bcondition-unreachable\b"))
    expect(prompt.locator("[data-field=condition]")).to_contain_text("could not reach endpoint")
    for name in ("Resend", "Escalate to the client's approver", "Cancel"):
        expect(prompt.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(shell.locator("[data-field=status]")).to_have_text("Awaiting approval")
    assert_not_reloaded(page)
    shots(page, "prompt-could-not-reach")

    agent.kill(signal.SIGKILL)  # and now it is gone for good
    expect(page.locator("h1 [data-field=presence]")).to_have_text("offline", timeout=45_000)
    prompt.get_by_role("button", name="Resend", exact=True).click()
    expect(page.get_by_text("Prompt queued again.")).to_be_visible()
    prompt = prompt_card(page)
    expect(prompt.locator("[data-field=state]")).to_have_text("Could not reach endpoint")
    expect(prompt.locator("[data-field=condition]")).to_contain_text("offline since")
    expect(prompt.locator(".history")).to_contain_text("resent by user:acme-tech")

    prompt.get_by_role("button", name="Escalate to the client's approver", exact=True).click()
    expect(page.get_by_text("Approval link sent to the client's designated approver.")).to_be_visible()
    assert support.mail_to(stack, "boss@client.example", subject_contains="Approval requested")

    prompt_card(page).get_by_role("button", name="Cancel", exact=True).click()
    expect(prompt_card(page).locator("[data-field=state]")).to_have_text("Cancelled")
    expect(action_card(page, "shell").locator("[data-field=status]")).to_have_text("Cancelled")


def test_prompt_held_by_a_sleeping_laptop_and_its_late_approval_is_honoured(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "sleepy01", "late")
    log_in(page, stack)
    open_session(page, agent.endpoint_id, "INC-4 VPN drops")
    shell = page.locator(f"#action-{run_shell(page, 'echo approved-while-asleep').get_attribute('data-action')}")
    prompt = prompt_card(page)
    state = prompt.locator("[data-field=state]")
    expect(state).to_have_class(re.compile(r"\bstatus-delivered\b"))
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)

    agent.proc.send_signal(signal.SIGSTOP)  # the lid closes with the prompt on screen
    prompt_id = prompt.get_attribute("data-prompt")
    decided = agent.prompts("approve", prompt_id[:8])  # the user had answered: in time, by its clock
    assert decided.returncode == 0, decided.stdout + decided.stderr

    # The console learns the endpoint is asleep: the prompt is held there, not undeliverable.
    expect(state).to_have_text("Held on the endpoint (asleep)", timeout=DEADLINE_S * 1000)
    expect(prompt.locator("[data-field=condition]")).to_contain_text("held on the endpoint, endpoint asleep since")
    shots(page, "prompt-held-asleep")

    # The deadline passes: expired here, and the card says it may still be decided there.
    expect(state).to_have_text("Expired unanswered", timeout=DEADLINE_S * 1000 + 15_000)
    expect(prompt.locator("[data-field=condition]")).to_contain_text("still held on the endpoint")
    expect(shell.locator("[data-field=status]")).to_have_text("Expired")
    shots(page, "prompt-expired-held")

    agent.proc.send_signal(signal.SIGCONT)  # the laptop wakes and reports the decision, late
    expect(state).to_have_text("Approved", timeout=45_000)
    late = prompt.locator("[data-field=late]")
    expect(late).to_contain_text("before the deadline")
    expect(late).to_contain_text("honoured")
    expect(prompt.locator("[data-field=reruns]")).to_contain_text("Ran again with the recorded approval")
    rerun = page.locator("#actions section.action").filter(has=page.locator("[data-field=rerun]"))
    expect(rerun).to_have_count(1)
    expect(rerun.locator("[data-field=status]")).to_have_text("Succeeded", timeout=45_000)
    expect(rerun.locator("[data-field=output]")).to_contain_text("approved-while-asleep")
    expect(shell.locator("[data-field=status]")).to_have_text("Expired")  # the record stays true
    assert_not_reloaded(page)
    shots(page, "prompt-late-approval-honoured")

    def record() -> list[str]:
        return stack.json(
            "import json; from sessions_app.models import TranscriptEntry, Prompt;"
            f"p = Prompt.all_tenants.get(pk='{prompt_id}');"
            "print(json.dumps(list(TranscriptEntry.all_tenants.filter(session_id=p.session_id)"
            ".values_list('kind', flat=True))))"
        )

    kinds = record()
    for kind in ("prompt.expired", "prompt.approved", "prompt.late_decision_honoured", "prompt.recorded_approval_used"):
        assert kind in kinds, kind
    wait_for(lambda: "action.result" in record(), timeout=10, what="the rerun's result in the transcript")


def test_prompt_held_asleep_shows_its_live_state_again_when_the_runtime_reconnects(stack, page):
    expect = support.expect()
    agent = start_agent(stack, "nap01", "late")
    log_in(page, stack)
    open_session(page, agent.endpoint_id, "INC-5 mapped drive missing")
    run_shell(page, "echo after-the-nap")
    prompt = prompt_card(page)
    state = prompt.locator("[data-field=state]")
    expect(state).to_have_class(re.compile(r"\bstatus-delivered\b"))
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)

    agent.proc.send_signal(signal.SIGSTOP)
    expect(state).to_have_text("Held on the endpoint (asleep)", timeout=DEADLINE_S * 1000)
    # It never wakes from this sleep: it reboots, and its agent says hello with what it holds.
    agent.kill(signal.SIGKILL)
    agent.start()
    expect(state).to_have_text("Delivered to the endpoint", timeout=20_000)
    expect(prompt.locator("[data-field=condition]")).to_have_count(0)
    assert_not_reloaded(page)
