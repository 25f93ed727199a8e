"""Drill: restart the server under 1,000 connected agents; every one comes back and delivers.

The agents are the benchmark's simulated ones (bench/loadgen.py: the real protocol over real
WebSockets, reconnecting with caisey-agent's full-jitter backoff), so a thousand fit on a test
machine. How fast they return is the benchmark's figure (bench/bridge.py, restart phase, 5,000
agents); here the drill asserts that all return, that no handshake is refused or times out
once the new server answers, and that deliveries flow again. The time is printed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest

from tests.e2e.stack import REPO

AGENTS = 1000


class LoadGen:
    """bench/loadgen.py driven over its stdin/stdout JSON protocol."""

    def __init__(self, stack) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "loadgen.py")],
            cwd=REPO,
            env=stack.env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(stack.workdir / "loadgen.log", "ab"),
            start_new_session=True,
        )
        stack.procs.append(self.proc)

    def call(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the load generator died (exit {self.proc.poll()})"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply


def driver(stack, *args: str, timeout: float = 300) -> dict:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "driver.py"), *args],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def many_files():
    """Daphne holds a socket per agent: it inherits this process's descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 3 * AGENTS + 500))
    if want < 2 * AGENTS + 200:
        pytest.fail(f"the descriptor limit ({hard}) is too low for {AGENTS} agents")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("stack", [{"BENCH_TENANT": "storm"}], indirect=True)
def test_server_restart_under_a_thousand_agents_every_one_returns_and_delivers(stack, many_files):
    seeded = driver(stack, "seed", "--agents", str(AGENTS), "--out", str(stack.workdir / "agents.json"))
    assert seeded["endpoints"] == AGENTS
    agents = json.loads((stack.workdir / "agents.json").read_text())
    url = f"ws://127.0.0.1:{stack.port}/ws/agent/"
    gen = LoadGen(stack)
    connected = gen.call(cmd="connect", url=url, mode="caisey", agents=agents, concurrency=50, ping_interval=120)
    assert connected["connected"] == AGENTS, connected["failures"]
    gen.call(cmd="reconnect_mode", url=url, ping_interval=120)

    # Restart the stack's one Daphne under the agents: a new process on the same port.
    down = time.time()
    stack.stop_server(stack.port)
    stack.start_server(stack.port)  # returns once it answers HTTP
    up_at = time.time()
    back = gen.call(cmd="await_back", since=down, up_at=up_at, timeout=240)
    print(
        f"\nDaphne restart under {AGENTS} agents: new server answering after {up_at - down:.1f} s, "
        f"{back['back']}/{back['agents']} agents back after {back['last_back_s']:.1f} s; "
        f"connects refused while it was down: {back['failures'].get('server_down', 0)}; "
        f"all handshake failures (the old server closing included): {back['failures']}"
    )
    assert back["back"] == AGENTS
    assert back["failed_once_up"] == {}, f"handshakes failed once the new server answered: {back['failed_once_up']}"

    # Delivering again: one action to 100 of them, every result recorded. The agents beat as real
    # ones do (presence, and so the outbox's retries, go by heartbeats).
    gen.call(cmd="hb_start")
    fanout = driver(stack, "fanout", "--count", "100", "--timeout", "120", timeout=300)
    assert fanout["final"] == 100, fanout
    lost = driver(stack, "lost", "--wait", "60")
    if lost["lost_messages"]:
        print(f"not acknowledged: {json.dumps(lost, indent=1)}\nload generator: {gen.call(cmd='stats')}")
    assert lost["lost_messages"] == 0
