"""`manage.py demo` as bin/demo runs it: the whole stack, the real local agent, and the simulated
fleet (caisey/demo_fleet.py, bench/sim_fleet.py). Every connectivity state the fleet is set up to
show is read from the console, i.e. through the server's own presence and health logic."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from caisey import demo_fleet
from tests.e2e.stack import REPO, Console, free_port, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-demo-password"


class Demo:
    def __init__(self, *args: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="caisey-demo-e2e-"))
        self.port = free_port()
        self.out = self.dir / "demo.out"
        env = {**os.environ, "CAISEY_DATA_DIR": str(self.dir), "CAISEY_DEMO_PASSWORD": PASSWORD}
        # The demo as a newcomer runs it: its own SQLite and embedded Redis in the data folder,
        # not the suite's database or Redis.
        for name in ("CAISEY_DATABASE_URL", "CAISEY_REDIS_URL", "CAISEY_REDIS_PREFIX", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        # A 1 s latency limit: the slow link answers 1.5 s late (demo_fleet.link_delay), the sweep looks every second.
        env.update({"CAISEY_DEGRADED_P95_MS": "1000", "CAISEY_PRESENCE_SWEEP_S": "1", "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(self.port), "--workers", "1", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.out, "wb"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_banner(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited ({self.proc.returncode}):\n{self.output()[-4000:]}")
            return "Caisey is running." in self.output()

        wait_for(ready, timeout=180, interval=0.5, what="the demo's banner")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        parts = [f"----- demo output\n{self.output()[-4000:]}"]
        for path in sorted((self.dir / "logs").glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@pytest.fixture
def demo(request):
    running: list[Demo] = []

    def start(*args: str) -> Demo:
        running.append(Demo(*args))
        return running[-1]

    yield start
    for d in running:
        d.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(d.logs())
        shutil.rmtree(d.dir, ignore_errors=True)


def row_of(page: str, hostname: str) -> str:
    match = re.search(
        rf'<tr data-endpoint="[^"]+">(?:(?!</tr>).)*>{re.escape(hostname)}</a>(?:(?!</tr>).)*</tr>', page, re.S
    )
    assert match, f"{hostname} is not on the endpoint list"
    return match.group(0)


def test_the_demo_shows_every_state_with_its_simulated_fleet_marked_and_stops_cleanly(demo):
    d = demo()
    d.wait_banner()
    assert "Local agent  online" in d.output()
    console = Console(d.port, "tech", PASSWORD)
    expected = {agent.hostname: agent.shows for agent in demo_fleet.FLEET}
    assert set(expected.values()) == {"lazy", "active", "degraded", "offline"}
    assert {agent.group for agent in demo_fleet.FLEET} == {"acme", "brightside"}

    def states() -> dict[str, str | None]:
        return {hostname: console.presence_on_list(hostname) for hostname in expected}

    wait_for(lambda: states() == expected, timeout=60, interval=1, what=f"the fleet's states {expected}")

    page = console.get("/")
    for hostname in expected:
        assert 'data-field="simulated"' in row_of(page, hostname), f"{hostname} is not badged simulated"
    local = [h for h in re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a>', page) if h not in expected]
    assert len(local) == 1, f"expected the local agent beside the fleet, found {local}"
    assert 'data-field="simulated"' not in row_of(page, local[0])
    assert console.presence_on_list(local[0]) in ("lazy", "active")

    # The degraded one says why, with the server's figures; the offline one has its work waiting.
    degraded = next(a.hostname for a in demo_fleet.FLEET if a.shows == "degraded")
    assert "delivery latency p95" in row_of(console.get("/"), degraded)
    offline = next(a.hostname for a in demo_fleet.FLEET if a.shows == "offline")
    offline_row = row_of(console.get("/"), offline)
    queue = re.findall(r"<td>(\d+)</td>", offline_row)
    assert queue and int(queue[0]) == len(demo_fleet.QUEUED_KINDS), offline_row

    assert d.stop() == 0
    assert "Stopped." in d.output()


def test_no_sim_fleet_runs_the_local_agent_alone(demo):
    d = demo("--no-sim-fleet")
    d.wait_banner()
    assert "Simulated    none (--no-sim-fleet)" in d.output()
    console = Console(d.port, "tech", PASSWORD)
    page = console.get("/")
    hosts = re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a>', page)
    assert len(hosts) == 1 and 'data-field="simulated"' not in page
    # The fleet starts before the banner when it starts at all: no process, no log.
    assert not (d.dir / "logs" / "sim-fleet.log").exists()
    assert d.stop() == 0
