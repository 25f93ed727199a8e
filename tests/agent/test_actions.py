"""The agent's action runner, driven through its handlers with a fake Agent (no server)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from caisey_agent import actions
from caisey_agent import policy as pol
from caisey_agent import protocol as p
from caisey_agent.handlers import default_handlers
from caisey_agent.state import AgentState


class FakeAgent:
    """What the handlers use of the real Agent: ``state`` and ``send_durable``."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self.sent: list = []

    async def send_durable(self, body) -> str:
        env = p.envelope(body)
        self.state.outbox_add(env.id, p.encode(env))  # as the real one does: kept until acknowledged
        self.sent.append(body)
        return env.id

    # --- what the tests read back ---

    def outputs(self, action_id: str) -> list[p.ActionOutput]:
        return [b for b in self.sent if isinstance(b, p.ActionOutput) and b.action_id == action_id]

    def results(self, action_id: str) -> list[p.ActionResult]:
        return [b for b in self.sent if isinstance(b, p.ActionResult) and b.action_id == action_id]

    def stream(self, action_id: str, name: str) -> str:
        return "".join(o.data for o in self.outputs(action_id) if o.stream == name)


@pytest.fixture
def agent(tmp_path):
    state = AgentState(tmp_path / "state")
    # An explicit local policy that allows shell commands, as the installer writes (no file: refused).
    pol.write_policy(state.dir, {"allow_shell": True})
    yield FakeAgent(state)
    state.close()


def write_policy(agent: FakeAgent, doc: dict, mode: int = 0o600) -> Path:
    path = agent.state.dir / "policy.json"
    path.write_text(json.dumps(doc))
    os.chmod(path, mode)
    return path


def make_run(
    kind: str,
    params: dict | None = None,
    *,
    action_id: str | None = None,
    category: str | None = None,
    timeout: float = 30,
    output_limit: int = 1024 * 1024,
) -> p.Envelope:
    spec = p.ACTION_KINDS.get(kind)
    body = p.ActionRun(
        action_id=action_id or uuid.uuid4().hex,
        kind=kind,
        category=category or (spec.category if spec else "diagnostic"),
        params=params or {},
        timeout=timeout,
        output_limit=output_limit,
        requested_by="tech@example.com",
    )
    return p.envelope(body)


async def start(agent: FakeAgent, kind: str, params: dict | None = None, **kw) -> str:
    env = make_run(kind, params, **kw)
    await default_handlers()[p.ActionRun.TYPE](agent, env)
    return env.body.action_id


async def wait_result(agent: FakeAgent, action_id: str, timeout: float = 30) -> p.ActionResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = agent.results(action_id)
        if results:
            return results[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no action.result for {action_id} within {timeout}s; sent: {agent.sent!r}")


async def run_action(agent: FakeAgent, kind: str, params: dict | None = None, timeout: float = 30, **kw):
    action_id = await start(agent, kind, params, timeout=timeout, **kw)
    result = await wait_result(agent, action_id, timeout=timeout + 10)
    await actions.manager(agent).wait_idle(5)
    return action_id, result


async def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def gone(pid: int) -> bool:
    """The process no longer runs (an orphaned zombie waiting for init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_frames_well_formed(agent: FakeAgent, action_id: str) -> None:
    """seq 0 is the status 'started', then 1, 2, 3... with no gap, and the result comes after the last output."""
    outputs = agent.outputs(action_id)
    assert outputs, "no action.output at all"
    assert (outputs[0].seq, outputs[0].stream, outputs[0].data) == (0, "status", "started")
    assert [o.seq for o in outputs] == list(range(len(outputs)))
    assert all(o.stream in ("status", "stdout", "stderr", "meta") for o in outputs)
    assert all(len(o.data.encode()) <= actions.CHUNK_BYTES for o in outputs)
    frames = [b for b in agent.sent if getattr(b, "action_id", None) == action_id]
    assert isinstance(frames[-1], p.ActionResult)
    assert len(agent.results(action_id)) == 1
    # Every frame is a valid protocol frame the bridge will accept.
    for body in frames:
        raw = p.encode(p.envelope(body))
        assert len(raw) < p.MAX_FRAME_BYTES
        p.decode(raw, accept=p.AGENT_TO_SERVER)


# --- the happy paths ---------------------------------------------------------------------------


async def test_handlers_are_registered():
    handlers = default_handlers()
    assert handlers[p.ActionRun.TYPE] is actions.handle_action_run
    assert handlers[p.ActionCancel.TYPE] is actions.handle_action_cancel


async def test_diagnostic_reports_succeeded_with_data_and_text(agent):
    action_id, result = await run_action(agent, "system_summary")
    assert result.status == "succeeded", result.error
    assert result.error == ""
    assert result.result["data"]["cpu"]["logical"] >= 1
    assert result.result["data"]["memory"]["total"] > 0
    assert "Memory" in result.result["text"]
    assert result.result["truncated"] is False
    assert result.started_at <= result.finished_at
    assert_frames_well_formed(agent, action_id)
    # The text rendering is also the action's output.
    assert "Memory" in agent.stream(action_id, "stdout")
    assert agent.state.action_get(action_id)["status"] == "succeeded"


async def test_shell_output_is_ordered_and_split_by_stream(agent):
    action_id, result = await run_action(
        agent, "shell", {"command": "echo one; echo oops >&2; sleep 0.4; echo two; printf 'h\\303\\251 \\n'; exit 3"}
    )
    assert result.status == "failed"
    assert result.exit_code == 3
    assert "exit code 3" in result.error
    assert agent.stream(action_id, "stdout") == "one\ntwo\nhé \n"
    assert agent.stream(action_id, "stderr") == "oops\n"
    assert result.result["data"]["stdout_bytes"] == len("one\ntwo\nhé \n".encode())
    assert_frames_well_formed(agent, action_id)


async def test_shell_success(agent):
    action_id, result = await run_action(agent, "shell", {"command": "echo hello"})
    assert (result.status, result.exit_code) == ("succeeded", 0)
    assert agent.stream(action_id, "stdout") == "hello\n"
    assert "exit code 0" in result.result["text"]


async def test_big_output_is_chunked_and_small_writes_are_coalesced(agent):
    action_id, result = await run_action(
        agent, "shell", {"command": "head -c 100000 /dev/zero | tr '\\0' x; for i in $(seq 1 300); do echo $i; done"}
    )
    assert result.status == "succeeded"
    out = agent.stream(action_id, "stdout")
    assert out == "x" * 100000 + "".join(f"{i}\n" for i in range(1, 301))
    chunks = [o for o in agent.outputs(action_id) if o.stream == "stdout"]
    assert max(len(o.data.encode()) for o in chunks) <= actions.CHUNK_BYTES
    # 100 kB in 16 KiB chunks is 7; the 300 small echoes are coalesced, not 300 frames.
    assert len(chunks) < 20
    assert_frames_well_formed(agent, action_id)


async def test_multibyte_characters_are_not_split_across_chunks(agent):
    # 20000 three-byte characters: every chunk must still be valid UTF-8 on its own.
    action_id, result = await run_action(
        agent,
        "shell",
        {
            "command": "i=0; while [ $i -lt 2000 ]; do printf '\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254\\342\\202\\254'; i=$((i+1)); done"
        },
    )
    assert result.status == "succeeded"
    assert agent.stream(action_id, "stdout") == "€" * 20000
    assert "\ufffd" not in agent.stream(action_id, "stdout")


async def test_output_cap_truncates_with_marker_and_keeps_running(agent, tmp_path):
    done = tmp_path / "finished"
    action_id, result = await run_action(
        agent,
        "shell",
        {"command": f"head -c 5000 /dev/zero | tr '\\0' y; echo; echo more >&2; echo ok > {done}"},
        output_limit=1000,
    )
    assert result.status == "succeeded"
    assert done.read_text() == "ok\n", "the command must run to completion past the cap"
    sent = agent.stream(action_id, "stdout") + agent.stream(action_id, "stderr")
    assert len(sent.encode()) == 1000
    meta = [o for o in agent.outputs(action_id) if o.stream == "meta"]
    assert [m.data for m in meta] == ["[output truncated: limit of 1000 bytes reached]"]
    assert agent.outputs(action_id)[-1].stream == "meta"  # nothing after the marker
    assert result.result["truncated"] is True
    assert result.result["discarded_bytes"] == 5000 + 1 + 5 - 1000
    assert_frames_well_formed(agent, action_id)


async def test_output_cap_applies_to_diagnostics(agent):
    action_id, result = await run_action(agent, "listening_ports", output_limit=50)
    assert result.status == "succeeded"
    assert len(agent.stream(action_id, "stdout").encode()) <= 50
    assert result.result["truncated"] is True
    assert len(result.result["text"].encode()) <= 50 + 100
    assert result.result["data"]["count"] >= 0  # structured data is kept whole


# --- timeout and cancel ------------------------------------------------------------------------


async def test_timeout_kills_the_shell_and_reports_timed_out(agent, tmp_path):
    pidfile = tmp_path / "pid"
    began = time.monotonic()
    action_id, result = await run_action(agent, "shell", {"command": f"echo $$ > {pidfile}; exec sleep 30"}, timeout=1)
    elapsed = time.monotonic() - began
    assert result.status == "timed_out"
    assert "timed out after 1 s" in result.error
    assert elapsed < 5
    pid = int(pidfile.read_text())
    assert gone(pid)
    assert_frames_well_formed(agent, action_id)


async def test_timeout_kills_the_whole_process_group(agent, tmp_path):
    pidfile = tmp_path / "pid"
    action_id, result = await run_action(
        agent, "shell", {"command": f"sleep 30 & echo $! > {pidfile}; trap '' TERM; wait; sleep 30"}, timeout=1
    )
    assert result.status == "timed_out"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gone(grandchild)


async def test_cancel_stops_a_running_shell(agent, tmp_path):
    pidfile = tmp_path / "pid"
    action_id = await start(agent, "shell", {"command": f"sleep 30 & echo $! > {pidfile}; wait"}, timeout=60)
    pid = int(await wait_for_file(pidfile))
    assert psutil.pid_exists(pid) and not gone(pid)
    began = time.monotonic()
    await default_handlers()[p.ActionCancel.TYPE](agent, p.envelope(p.ActionCancel(action_id=action_id)))
    result = await wait_result(agent, action_id, timeout=10)
    assert result.status == "cancelled"
    assert time.monotonic() - began < 5
    deadline = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gone(pid), "the shell's child must be killed with its process group"
    assert agent.state.action_get(action_id)["status"] == "cancelled"
    assert_frames_well_formed(agent, action_id)


async def test_cancel_stops_a_running_diagnostic(agent, monkeypatch):
    from caisey_agent.diagnostics import registry as real_registry

    def slow(ctx):
        ctx.sleep(30)
        raise AssertionError("not reached")

    monkeypatch.setattr(actions, "registry", lambda: {**real_registry(), "system_summary": slow})
    action_id = await start(agent, "system_summary")
    await asyncio.sleep(0.2)
    began = time.monotonic()
    await actions.handle_action_cancel(agent, p.envelope(p.ActionCancel(action_id=action_id)))
    result = await wait_result(agent, action_id, timeout=5)
    assert result.status == "cancelled"
    assert time.monotonic() - began < 3


async def test_diagnostic_timeout(agent, monkeypatch):
    from caisey_agent.diagnostics import registry as real_registry

    monkeypatch.setattr(actions, "registry", lambda: {**real_registry(), "disk_usage": lambda ctx: ctx.sleep(30)})
    began = time.monotonic()
    _, result = await run_action(agent, "disk_usage", timeout=0.5)
    assert result.status == "timed_out"
    assert time.monotonic() - began < 3


async def test_cancel_of_unknown_or_finished_action_is_a_no_op(agent):
    action_id, result = await run_action(agent, "shell", {"command": "true"})
    sent = len(agent.sent)
    await actions.handle_action_cancel(agent, p.envelope(p.ActionCancel(action_id=action_id)))
    assert len(agent.sent) == sent
    assert agent.state.action_get(action_id)["status"] == "succeeded"


async def test_cancel_before_run_means_it_never_runs(agent, tmp_path):
    marker = tmp_path / "ran"
    action_id = uuid.uuid4().hex
    await actions.handle_action_cancel(agent, p.envelope(p.ActionCancel(action_id=action_id)))
    assert agent.sent == []
    await start(agent, "shell", {"command": f"touch {marker}"}, action_id=action_id)
    result = await wait_result(agent, action_id)
    assert result.status == "cancelled"
    await asyncio.sleep(0.3)
    assert not marker.exists()
    assert agent.outputs(action_id) == []


async def test_actions_run_concurrently(agent):
    began = time.monotonic()
    ids = [await start(agent, "shell", {"command": "sleep 2; echo done"}) for _ in range(3)]
    ids.append(await start(agent, "top_processes"))
    results = [await wait_result(agent, i, timeout=15) for i in ids]
    assert [r.status for r in results] == ["succeeded"] * 4
    assert time.monotonic() - began < 5, "one after the other would take at least 6 s"
    for i in ids[:3]:
        assert agent.stream(i, "stdout") == "done\n"


# --- refusals ------------------------------------------------------------------------------------


async def test_local_policy_refuses_shell(agent, tmp_path):
    write_policy(agent, {"forbid_categories": ["shell"]})
    marker = tmp_path / "ran"
    action_id, result = await run_action(agent, "shell", {"command": f"touch {marker}"})
    assert result.status == "refused"
    assert "local policy forbids shell actions" in result.error
    assert agent.outputs(action_id) == []
    await asyncio.sleep(0.2)
    assert not marker.exists()
    assert agent.state.action_get(action_id)["status"] == "refused"
    # Diagnostics are still allowed.
    _, ok = await run_action(agent, "pending_reboot")
    assert ok.status == "succeeded"


async def test_without_a_local_policy_shell_is_refused_with_how_to_allow_it(agent, tmp_path):
    (agent.state.dir / "policy.json").unlink()
    marker = tmp_path / "ran"
    action_id, result = await run_action(agent, "shell", {"command": f"touch {marker}"})
    assert result.status == "refused" and not marker.exists()
    assert '"allow_shell": true' in result.error and str(agent.state.dir / "policy.json") in result.error
    _, ok = await run_action(agent, "pending_reboot")
    assert ok.status == "succeeded"  # diagnostics still run


async def test_local_policy_forbids_a_kind(agent):
    write_policy(agent, {"forbid_kinds": ["service_restart"]})
    _, result = await run_action(agent, "service_restart", {"service": "cron"})
    assert result.status == "refused"
    assert "'service_restart'" in result.error


async def test_policy_edits_take_effect_without_restart(agent):
    _, first = await run_action(agent, "shell", {"command": "true"})
    assert first.status == "succeeded"
    write_policy(agent, {"forbid_categories": ["shell"]})
    _, second = await run_action(agent, "shell", {"command": "true"})
    assert second.status == "refused"


async def test_unsafe_policy_file_means_lockdown(agent):
    write_policy(agent, {"forbid_categories": []}, mode=0o666)
    _, result = await run_action(agent, "shell", {"command": "true"})
    assert result.status == "refused"
    assert "lockdown" in result.error and "writable by group or others" in result.error


async def test_forbidden_file_tail_path_is_refused(agent, tmp_path):
    write_policy(agent, {"allowed_tail_paths": [str(tmp_path / "logs" / "*")]})
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("a\nb\nc\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    _, refused = await run_action(agent, "file_tail", {"path": str(secret)})
    assert refused.status == "refused"
    assert "does not allow reading" in refused.error and str(secret) in refused.error
    # A symlink inside the allowed folder is resolved first, and ../ tricks too.
    (tmp_path / "logs" / "link.log").symlink_to(secret)
    _, via_link = await run_action(agent, "file_tail", {"path": str(tmp_path / "logs" / "link.log")})
    assert via_link.status == "refused"
    _, via_dots = await run_action(agent, "file_tail", {"path": str(tmp_path / "logs" / ".." / "secret.txt")})
    assert via_dots.status == "refused"
    assert not any("password" in getattr(b, "data", "") for b in agent.sent)
    action_id, allowed = await run_action(agent, "file_tail", {"path": str(tmp_path / "logs" / "app.log"), "lines": 2})
    assert allowed.status == "succeeded"
    assert allowed.result["data"]["lines"] == ["b", "c"]


@pytest.mark.parametrize(
    "kind, params, category, reason",
    [
        ("tcp_connect", {"host": "127.0.0.1", "port": 70000}, None, "invalid parameters: port must be between"),
        ("tcp_connect", {"host": "127.0.0.1"}, None, "invalid parameters: port is required"),
        ("system_summary", {"evil": "1"}, None, "invalid parameters: unknown parameters: evil"),
        ("top_processes", {"sort": "rm -rf"}, None, "invalid parameters: sort must be one of"),
        ("format_disk", {}, "diagnostic", "unknown action kind 'format_disk'"),
        ("shell", {"command": "true"}, "diagnostic", "category mismatch"),
    ],
)
async def test_invalid_requests_are_refused(agent, kind, params, category, reason):
    action_id, result = await run_action(agent, kind, params, category=category)
    assert result.status == "refused"
    assert reason in result.error
    assert agent.outputs(action_id) == []


# --- never twice ---------------------------------------------------------------------------------


async def test_same_action_id_never_runs_twice(agent, tmp_path):
    counter = tmp_path / "count"
    action_id, result = await run_action(agent, "shell", {"command": f"echo x >> {counter}"})
    assert result.status == "succeeded"
    # The server resends under a new envelope id (the runner's event dedup would not catch that).
    await start(agent, "shell", {"command": f"echo x >> {counter}"}, action_id=action_id)
    await asyncio.sleep(0.3)
    assert counter.read_text() == "x\n"
    assert len(agent.results(action_id)) == 1


async def test_duplicate_while_running_is_ignored(agent, tmp_path):
    counter = tmp_path / "count"
    action_id = await start(agent, "shell", {"command": f"echo x >> {counter}; sleep 0.5"})
    await start(agent, "shell", {"command": f"echo x >> {counter}; sleep 0.5"}, action_id=action_id)
    await wait_result(agent, action_id)
    await asyncio.sleep(0.2)
    assert counter.read_text() == "x\n"
    assert len(agent.results(action_id)) == 1


async def test_interrupted_action_is_reported_failed_and_not_rerun(agent, tmp_path):
    marker = tmp_path / "ran"
    action_id = uuid.uuid4().hex
    # A previous agent process recorded it as running, then died.
    assert agent.state.action_begin(action_id, "shell", "previous-process", time.time() - 30)
    reported = await actions.recover_interrupted(agent)
    assert reported == 1
    [result] = agent.results(action_id)
    assert result.status == "failed"
    assert result.error == (
        "the agent stopped while this action was running; it was not re-run to avoid running it twice"
    )
    assert result.started_at is not None and result.finished_at >= result.started_at
    assert agent.state.action_get(action_id)["status"] == "failed"
    # Idempotent: a second call (e.g. after the next handshake) reports nothing more.
    assert await actions.recover_interrupted(agent) == 0
    # A resend of the same action is not run.
    await start(agent, "shell", {"command": f"touch {marker}"}, action_id=action_id)
    await asyncio.sleep(0.3)
    assert not marker.exists()
    assert len(agent.results(action_id)) == 1


async def test_recovery_stops_a_command_the_crashed_agent_left_running(agent):
    # The shell of a crashed agent lives on in its own session; the restarted agent stops it.
    leftover = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        action_id = uuid.uuid4().hex
        agent.state.action_begin(action_id, "shell", "previous-process", time.time() - 5)
        agent.state.action_set_process(action_id, leftover.pid, psutil.Process(leftover.pid).create_time())
        assert await actions.recover_interrupted(agent) == 1
        assert leftover.wait(timeout=5) == -9
        [result] = agent.results(action_id)
        assert result.status == "failed"
        assert result.result["data"]["leftover_process_killed"] is True
    finally:
        leftover.kill()
        leftover.wait()


async def test_recovery_does_not_kill_a_reused_pid(agent):
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        action_id = uuid.uuid4().hex
        agent.state.action_begin(action_id, "shell", "previous-process", time.time() - 5)
        # Same pid, but a different start time: another process got that pid since.
        agent.state.action_set_process(action_id, bystander.pid, psutil.Process(bystander.pid).create_time() - 100)
        assert await actions.recover_interrupted(agent) == 1
        assert bystander.poll() is None
        assert agent.results(action_id)[0].result["data"]["leftover_process_killed"] is False
    finally:
        bystander.kill()
        bystander.wait()


async def test_recovery_leaves_actions_of_this_process_alone(agent):
    action_id = await start(agent, "shell", {"command": "sleep 0.5"})
    assert await actions.recover_interrupted(agent) == 0
    result = await wait_result(agent, action_id)
    assert result.status == "succeeded"


async def test_recovery_when_the_result_was_already_queued(agent):
    # Crash after the result went into the outbox but before the action was marked finished.
    action_id = uuid.uuid4().hex
    agent.state.action_begin(action_id, "system_summary", "previous-process", time.time() - 5)
    env = p.envelope(
        p.ActionResult(
            action_id=action_id, status="succeeded", result={"data": {}, "text": ""}, finished_at=time.time()
        )
    )
    agent.state.outbox_add(env.id, p.encode(env))
    assert await actions.recover_interrupted(agent) == 0
    assert agent.results(action_id) == []  # no contradicting "failed"
    assert agent.state.action_get(action_id)["status"] == "succeeded"


async def test_recovery_after_a_restart(tmp_path, monkeypatch):
    """A new agent process (new run token) on the same state file reports what the old one left running."""
    state = AgentState(tmp_path / "s")
    action_id = uuid.uuid4().hex
    assert state.action_begin(action_id, "shell", actions.RUN_TOKEN, time.time())
    assert await actions.recover_interrupted(FakeAgent(state)) == 0  # still ours: running in this process
    state.close()
    monkeypatch.setattr(actions, "RUN_TOKEN", uuid.uuid4().hex)  # the agent restarted
    second = FakeAgent(AgentState(tmp_path / "s"))
    assert await actions.recover_interrupted(second) == 1
    assert second.results(action_id)[0].status == "failed"
    # The report itself is durable: it waits in the outbox until the server acknowledges it.
    assert second.state.outbox_find_result(action_id)["status"] == "failed"
    second.state.close()


async def test_agent_stop_kills_running_shell_and_reports(agent, tmp_path):
    pidfile = tmp_path / "pid"
    action_id = await start(agent, "shell", {"command": f"echo $$ > {pidfile}; exec sleep 30"})
    pid = int(await wait_for_file(pidfile))
    await actions.stop_all(agent)
    [result] = agent.results(action_id)
    assert result.status == "failed"
    assert "agent was stopped" in result.error
    deadline = time.monotonic() + 3
    while not gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gone(pid)
    assert agent.state.action_get(action_id)["status"] == "failed"


async def test_frames_survive_in_the_outbox_while_disconnected(agent):
    action_id, result = await run_action(agent, "shell", {"command": "echo kept"})
    frames = [json.loads(f) for _, f in agent.state.outbox_pending()]
    mine = [f for f in frames if f["body"].get("action_id") == action_id]
    assert [f["type"] for f in mine][0] == "action.output"
    assert mine[-1]["type"] == "action.result" and mine[-1]["body"]["status"] == "succeeded"


# --- helpers -------------------------------------------------------------------------------------


def test_fit_result_keeps_results_within_one_frame():
    big = {
        "data": {"lines": [f"line {i} " + "z" * 100 for i in range(5000)], "path": "/x"},
        "text": "t" * 300_000,
        "truncated": False,
    }
    fitted = actions.fit_result(big)
    assert len(json.dumps(fitted).encode()) <= actions.RESULT_BUDGET_BYTES
    assert fitted["truncated"] is True
    assert fitted["data"]["path"] == "/x"
    assert fitted["data"]["lines"][-1].startswith("line 4999 "), "the latest lines are kept"


def test_clip_utf8_never_splits_a_character():
    assert actions.clip_utf8("ééé", 3) == "é"
    assert actions.clip_utf8("abc", 0) == ""
    assert actions.clip_utf8("abc", 10) == "abc"


# --- with the real Agent over a real WebSocket ---------------------------------------------------


async def test_real_agent_runs_an_action_and_the_frames_reach_the_server(tmp_path):
    """The runner's dispatch, the handlers and send_durable together, against a stand-in bridge on 127.0.0.1."""
    from websockets.asyncio.server import serve

    from caisey_agent.runner import Agent
    from caisey_agent.state import Identity

    received: list[p.Envelope] = []
    done = asyncio.Event()
    action_id = uuid.uuid4().hex

    async def bridge(ws):
        hello = p.decode(await ws.recv(), accept=p.AGENT_TO_SERVER)
        assert hello.type == "hello"
        await ws.send(
            p.encode(
                p.envelope(p.Welcome(endpoint_id="ep1", mode="active", heartbeat_interval=30, server_time=time.time()))
            )
        )
        run = p.ActionRun(
            action_id=action_id,
            kind="shell",
            category="shell",
            params={"command": "echo from-the-endpoint"},
            timeout=10,
        )
        await ws.send(p.encode(p.envelope(run)))
        async for raw in ws:
            env = p.decode(raw, accept=p.AGENT_TO_SERVER)
            received.append(env)
            if env.type in ("action.output", "action.result"):
                await ws.send(p.encode(p.envelope(p.Ack(ref=env.id))))
            if env.type == "action.result":
                await asyncio.sleep(0.2)  # let the agent process the last ack
                done.set()

    async with serve(bridge, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        state = AgentState(tmp_path / "real")
        pol.write_policy(state.dir, {"allow_shell": True})
        state.save_identity(
            Identity(
                server=f"http://127.0.0.1:{port}", endpoint_id="ep1", credential="c", machine_id=state.machine_id()
            )
        )
        agent = Agent(state, handlers=default_handlers())
        runner = asyncio.create_task(agent.run_forever())
        try:
            await asyncio.wait_for(done.wait(), timeout=15)
        finally:
            agent.stop()
            await asyncio.wait_for(runner, timeout=5)
    bodies = [e.body for e in received if e.type in ("action.output", "action.result")]
    assert bodies[0] == p.ActionOutput(action_id=action_id, seq=0, stream="status", data="started")
    assert "".join(b.data for b in bodies if getattr(b, "stream", "") == "stdout") == "from-the-endpoint\n"
    assert bodies[-1].status == "succeeded"
    assert any(e.type == "ack" for e in received), "the agent acknowledges the action.run"
    assert state.outbox_depth() == 0, "every acknowledged frame left the outbox"
    assert state.action_get(action_id)["status"] == "succeeded"
    state.close()


def test_state_file_from_before_the_pid_columns_is_upgraded(tmp_path):
    import sqlite3

    folder = tmp_path / "old"
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / AgentState.FILENAME)
    db.execute(
        "CREATE TABLE actions (action_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,"
        " run_token TEXT NOT NULL DEFAULT '', started_at REAL, finished_at REAL,"
        " error TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL)"
    )
    db.execute("INSERT INTO actions VALUES ('a1', 'shell', 'running', 'old', 1.0, NULL, '', 1.0)")
    db.commit()
    db.close()
    state = AgentState(folder)
    try:
        assert state.action_get("a1")["pid"] is None
        state.action_set_process("a1", 123, 4.5)
        assert state.action_get("a1")["pid_created_at"] == 4.5
    finally:
        state.close()
