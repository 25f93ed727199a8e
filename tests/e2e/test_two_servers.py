"""Nothing assumes one process: an agent on one Daphne, the technician's console on another.

Two separate servers on two ports, and `manage.py serve` (two Daphne processes on one socket, the
kernel choosing). Run against PostgreSQL and the shared Redis in CI's second pass (and SQLite plus
the embedded Redis in the first): presence, wake-up and live updates must cross processes.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import urllib.parse
import urllib.request

import psutil
import pytest

from tests.e2e.console_socket import next_event, open_console_socket
from tests.e2e.stack import Stack, free_port, run_async, wait_for

pytestmark = pytest.mark.e2e


def post(console, path: str, data: dict) -> str:
    page = console.get(path if path.endswith("/") else "/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": csrf}).encode()
    request = urllib.request.Request(f"{console.base}{path}", data=body, headers={"Referer": f"{console.base}/"})
    return console.opener.open(request, timeout=10).geturl()


def test_presence_wake_and_live_updates_cross_two_daphne_processes(stack):
    login = stack.seed()
    agent_port = stack.port
    console_port = stack.start_server()
    agent = stack.enroll_agent(agent_port, stack.token("acme", "erp"), name="dc02").start()
    console = stack.login(console_port, login["username"], login["password"])
    wait_for(
        lambda: console.presence_on_list("dc02") == "lazy", timeout=30, what="dc02 lazy, seen from the other server"
    )

    async def open_session_and_watch():
        async with open_console_socket(console) as ws:
            session_url = await asyncio.to_thread(
                post, console, f"/endpoints/{agent.endpoint_id}/sessions/open", {"reason": "cross-process"}
            )
            # The wake (mode.set) is queued on the console's server and delivered by the agent's.
            payload = await next_event(ws, event="endpoint.presence", where=lambda p: p["presence"] == "active")
            return session_url, payload

    session_url, payload = run_async(open_session_and_watch())
    assert payload["hostname"] == "dc02"
    wait_for(lambda: "mode set to active" in agent.log_text(), timeout=30, what="agent woken")
    assert "/sessions/" in session_url

    async def watch_agent_die():
        async with open_console_socket(console) as ws:
            agent.kill(signal.SIGKILL)
            return await next_event(ws, event="endpoint.presence", where=lambda p: p["hostname"] == "dc02")

    assert run_async(watch_agent_die())["presence"] == "offline"
    assert console.presence_on_list("dc02") == "offline"


# --- `manage.py serve`: several Daphne processes on one socket, the kernel choosing ----------------

METRICS_TOKEN = "e2e-metrics-token-0123456789"


@pytest.fixture
def served():
    """`manage.py serve --workers 2` (two Daphne processes on one listening socket, the Celery worker
    and beat) as production runs it, on the suite's database and Redis (PostgreSQL and Redis in
    CI's second pass). Logs shown on failure."""
    s = Stack(extra_env={"CAISEY_METRICS_TOKEN": METRICS_TOKEN})
    s.port = free_port()
    argv = [sys.executable, "manage.py", "serve", "--workers", "2", "--port", str(s.port)]
    argv += ["--celery-concurrency", "1", "--stop-timeout", "10", "--log-dir", str(s.workdir)]
    s.serve = s.spawn(argv, s.workdir / "serve.log")
    ok = False
    try:
        wait_for(lambda: s.http_get(s.port, "/healthz").status == 200, timeout=60, what="serve answering")
        yield s
        ok = True
    finally:
        if not ok:
            print(s.logs())
        s.cleanup()


def daphnes(serve) -> list[psutil.Process]:
    return [c for c in psutil.Process(serve.pid).children() if "caisey.daphne" in " ".join(c.cmdline())]


def holder(processes: list[psutil.Process], client_port: int) -> int | None:
    """The pid of the Daphne process holding the connection whose client end is ``client_port``."""
    for proc in processes:
        if any(c.raddr and c.raddr.port == client_port for c in proc.net_connections(kind="tcp")):
            return proc.pid
    return None


def agent_client_port(agent, server_port: int) -> int:
    conns = psutil.Process(agent.proc.pid).net_connections(kind="tcp")
    ports = [c.laddr.port for c in conns if c.raddr and c.raddr.port == server_port and c.status == "ESTABLISHED"]
    assert len(ports) == 1, conns
    return ports[0]


def connects_total(stack) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    body = urllib.request.urlopen(request, timeout=10).read().decode()
    match = re.search(r"^caisey_agent_connects_total (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def test_serve_workers_share_one_socket_and_nothing_assumes_one_process(served):
    """The agent's socket in one Daphne process of `serve`, the technician's in the other (steered by
    pausing the other process while each connects; the kernel hands a connection to whichever
    accepts): presence, wake-up and live updates cross them; /metrics counts every process whichever
    answers; a killed Daphne process is restarted and its agent comes back; SIGTERM stops it all."""
    s = served
    first, second = wait_for(lambda: len(daphnes(s.serve)) == 2 and daphnes(s.serve), timeout=30, what="2 daphnes")
    login = s.seed()
    first.suspend()  # the agent's connection goes to the other one
    try:
        agent = s.enroll_agent(s.port, s.token("acme", "erp"), name="dc03").start()
        wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    finally:
        first.resume()
    agent_on = holder([first, second], agent_client_port(agent, s.port))
    assert agent_on == second.pid
    console = s.login(s.port, login["username"], login["password"])
    wait_for(lambda: console.presence_on_list("dc03") == "lazy", timeout=30, what="dc03 lazy on the list")
    endpoint_id = agent.endpoint_id

    async def scenario():
        second.suspend()  # the console's socket goes to the other one
        try:
            ws_cm = open_console_socket(console)
            ws = await ws_cm.__aenter__()
        finally:
            second.resume()
        try:
            assert holder([first, second], ws.local_address[1]) == first.pid
            session_url = await asyncio.to_thread(
                post, console, f"/endpoints/{endpoint_id}/sessions/open", {"reason": "serve, two processes"}
            )
            woke = await next_event(ws, event="endpoint.presence", where=lambda p: p["presence"] == "active")
            await asyncio.to_thread(
                wait_for, lambda: "mode set to active" in agent.log_text(), timeout=30, what="agent woken"
            )
            # Every scrape, whichever process answers it, counts the one connect made in the other.
            counts = [await asyncio.to_thread(connects_total, s) for _ in range(6)]
            # The agent's Daphne process dies: serve starts another, the agent reconnects, the
            # console (in the surviving process) hears of it.
            second.kill()
            back = await next_event(
                ws,
                event="endpoint.presence",
                where=lambda p: p["hostname"] == "dc03" and p["presence"] != "offline",
                timeout=60,
            )
            await asyncio.to_thread(
                wait_for, lambda: agent.log_text().count("connected as") >= 2, timeout=30, what="agent back"
            )
            after = [await asyncio.to_thread(connects_total, s) for _ in range(6)]
            agent.kill(signal.SIGKILL)
            gone = await next_event(ws, event="endpoint.presence", where=lambda p: p["hostname"] == "dc03")
            return session_url, woke, counts, back, after, gone
        finally:
            await ws_cm.__aexit__(None, None, None)

    session_url, woke, counts, back, after, gone = run_async(scenario())
    assert "/sessions/" in session_url and woke["hostname"] == "dc03"
    assert counts == [1.0] * 6
    assert after == [2.0] * 6
    assert back["presence"] in ("active", "waking")
    assert gone["presence"] == "offline"
    serve_log = (s.workdir / "serve.log").read_text()
    assert f"(pid {second.pid}) was killed by SIGKILL" in serve_log
    wait_for(
        lambda: len(daphnes(s.serve)) == 2 and second.pid not in [p.pid for p in daphnes(s.serve)],
        timeout=30,
        what="serve started a Daphne process in place of the killed one",
    )

    children = psutil.Process(s.serve.pid).children(recursive=True)
    s.serve.send_signal(signal.SIGTERM)
    assert s.serve.wait(timeout=60) == 0
    gone_, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    stops = re.findall(r"stopped (daphne-\d|celery-beat|celery-worker) ", (s.workdir / "serve.log").read_text())
    assert sorted(stops[:2]) == ["daphne-0", "daphne-1"] and stops[2:] == ["celery-beat", "celery-worker"]
