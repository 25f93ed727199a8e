"""Real agents, real server: diagnostics run and stream back; prompts survive a sleeping laptop."""

from __future__ import annotations

import signal

import pytest

from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e


def final(stack, action_id: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (st := stack.json(h.action_state(action_id)))["status"] in
        ("succeeded", "failed", "timed_out", "cancelled", "expired") and st,
        timeout=timeout, interval=0.5, what=f"action {action_id} to finish",
    )


def test_diagnostic_and_shell_command_run_on_a_real_agent(stack):
    login = stack.seed()
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="app01").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    session = stack.json(h.open_session(login["username"], agent.endpoint_id))
    summary = stack.json(h.run(login["username"], session, "system_summary", {}))
    shell = stack.json(h.run(login["username"], session, "shell", {"command": "echo caisey-$((6*7))"}))
    result = final(stack, summary)
    assert result["status"] == "succeeded" and result["result"]["data"]
    result = final(stack, shell)
    assert result["status"] == "succeeded" and result["exit_code"] == 0 and "caisey-42" in result["output"]


def test_laptop_sleep_decision_while_disconnected_is_honoured(stack):
    """Prompt delivered, agent stopped (the laptop sleeps), the user decides offline, the agent
    comes back: the decision reaches the server and the gated command runs."""
    login = stack.seed()
    stack.django(h.set_policy("erp", "shell", deadline_s=600))
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="laptop").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    session = stack.json(h.open_session(login["username"], agent.endpoint_id))
    action = stack.json(h.run(login["username"], session, "shell", {"command": "echo approved-run"}))
    wait_for(lambda: stack.json(h.prompt_state(action))["state"] == "delivered", timeout=30, what="prompt delivered")
    agent.kill(signal.SIGKILL)  # the lid closes
    listing = agent.prompts("list")
    assert "echo approved-run" in listing.stdout
    prompt_id = stack.json(h.prompt_state(action))["id"]
    decided = agent.prompts("approve", prompt_id[:8])
    assert decided.returncode == 0, decided.stderr
    assert stack.json(h.prompt_state(action))["state"] in ("delivered", "acknowledged")  # server does not know yet
    agent.start()  # the lid opens
    wait_for(lambda: stack.json(h.prompt_state(action))["state"] == "approved", timeout=30, what="approval arrives")
    result = final(stack, action)
    assert result["status"] == "succeeded" and "approved-run" in result["output"]


def test_cancel_racing_a_late_approval_never_runs_the_command(stack):
    login = stack.seed()
    stack.django(h.set_policy("erp", "shell", deadline_s=600))
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="racer").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    session = stack.json(h.open_session(login["username"], agent.endpoint_id))
    marker = stack.workdir / "ran.txt"
    action = stack.json(h.run(login["username"], session, "shell", {"command": f"echo ran >> {marker}"}))
    wait_for(lambda: stack.json(h.prompt_state(action))["state"] == "delivered", timeout=30, what="prompt delivered")
    agent.kill(signal.SIGKILL)
    prompt_id = stack.json(h.prompt_state(action))["id"]
    assert agent.prompts("approve", prompt_id[:8]).returncode == 0  # approved on the endpoint...
    stack.django(h.PRELUDE.format(tech=login["username"]) +  # ...while the technician cancels
                 f"prompts.prompt_cancel(actor=tech, prompt=Prompt.all_tenants.get(pk='{prompt_id}'))")
    agent.start()
    wait_for(lambda: "withdrawn" in agent.log_text(), timeout=30, what="runtime told to withdraw")
    assert stack.json(h.prompt_state(action))["state"] == "cancelled"
    assert stack.json(h.action_state(action))["status"] == "cancelled"
    assert not marker.exists()
    record = stack.django(
        "from sessions_app.models import TranscriptEntry;"
        f"print(list(TranscriptEntry.all_tenants.filter(session_id='{session}').values_list('kind', flat=True)))"
    )
    assert "prompt.late_decision_ignored" in record
