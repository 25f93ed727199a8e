"""Real agents, real server: diagnostics run and stream back; prompts survive a sleeping laptop."""

from __future__ import annotations

import signal

import pytest

from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e


def final(stack, action_id: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (
            (st := stack.json(h.action_state(action_id)))["status"]
            in ("succeeded", "failed", "timed_out", "cancelled", "expired")
            and st
        ),
        timeout=timeout,
        interval=0.5,
        what=f"action {action_id} to finish",
    )


def test_diagnostic_and_shell_command_run_on_a_real_agent(stack):
    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # a new group gates commands; this test is about running them
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
    stack.django(
        h.PRELUDE.format(tech=login["username"])  # ...while the technician cancels
        + f"prompts.prompt_cancel(actor=tech, prompt=Prompt.all_tenants.get(pk='{prompt_id}'))"
    )
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


def test_bridge_restart_during_a_storm_of_200_prompts_across_20_agents_converges(stack):
    import time

    from tests.e2e.test_fault_drills import enroll_many

    login = stack.seed()
    stack.django(h.set_policy("erp", "shell", deadline_s=900))
    agents = enroll_many(stack, 20, "storm")
    for agent in agents:
        agent.start()
    wait_for(lambda: all("connected as" in a.log_text() for a in agents), timeout=60, what="20 agents connected")
    ids = stack.json(
        h.PRELUDE.format(tech=login["username"])
        + (
            "ids = [];\n"
            f"for eid in {[a.endpoint_id for a in agents]!r}:\n"
            "    s = sessions.session_open(actor=tech, endpoint=Endpoint.all_tenants.get(pk=eid), reason='storm')\n"
            "    for n in range(10):\n"
            "        ids.append(str(services.action_request(actor=tech, session=s, kind='shell',"
            " params={'command': 'echo storm'}).pk))\n"
            "print(json.dumps(ids))"
        )
    )
    assert len(ids) == 200
    stack.stop_server(stack.port, signal.SIGKILL)  # the bridge dies mid-storm
    started = time.monotonic()
    stack.start_server(stack.port)

    def prompt_states() -> dict:
        return stack.json(
            "import json, collections; from sessions_app.models import Prompt;"
            f"print(json.dumps(collections.Counter(Prompt.all_tenants.filter(action_id__in={ids!r})"
            ".values_list('state', flat=True))))"
        )

    wait_for(
        lambda: prompt_states().get("delivered", 0) + prompt_states().get("acknowledged", 0) == 200,
        timeout=120,
        interval=0.5,
        what="all 200 prompts delivered",
    )
    held = [len([line for line in a.prompts("list").stdout.splitlines() if line.startswith("[")]) for a in agents]
    converge_s = time.monotonic() - started
    print(f"\nstorm: 200 prompts across 20 agents converged {converge_s:.1f} s after the bridge restart")
    assert held == [10] * 20, held
    # Each endpoint's user approves one; the technician cancels one per endpoint.
    per_endpoint = stack.json(
        "import json; from sessions_app.models import Prompt;"
        f"rows = Prompt.all_tenants.filter(action_id__in={ids!r}).order_by('created_at').values_list('endpoint_id', 'id');"
        "out = {};\n"
        "for e, p in rows: out.setdefault(str(e), []).append(str(p))\n"
        "print(json.dumps(out))"
    )
    approved, cancelled = [], []
    for agent in agents:
        mine = per_endpoint[agent.endpoint_id]
        assert agent.prompts("approve", mine[0][:12]).returncode == 0
        approved.append(mine[0])
        cancelled.append(mine[1])
    stack.django(
        h.PRELUDE.format(tech=login["username"])
        + f"[prompts.prompt_cancel(actor=tech, prompt=Prompt.all_tenants.get(pk=p)) for p in {cancelled!r}]"
    )
    states = lambda: stack.json(  # noqa: E731
        "import json; from sessions_app.models import Prompt, Action;"
        f"print(json.dumps({{str(p.pk): [p.state, Action.all_tenants.get(pk=p.action_id).status]"
        f" for p in Prompt.all_tenants.filter(pk__in={approved + cancelled!r})}}))"
    )
    wait_for(
        lambda: all(v == ["approved", "succeeded"] for k, v in states().items() if k in approved),
        timeout=120,
        interval=1,
        what="approved prompts ran their commands",
    )
    final_states = states()
    assert all(final_states[p] == ["cancelled", "cancelled"] for p in cancelled)
    wait_for(
        lambda: all(len([x for x in a.prompts("list").stdout.splitlines() if x.startswith("[")]) == 8 for a in agents),
        timeout=60,
        interval=1,
        what="runtimes hold the 8 still-open prompts",
    )
