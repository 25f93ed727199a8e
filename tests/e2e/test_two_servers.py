"""Nothing assumes one process: an agent on one Daphne, the technician's console on another.

Run against PostgreSQL and the shared Redis in CI's second pass (and SQLite plus the
embedded Redis in the first): presence, wake-up and live updates must cross processes.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.parse
import urllib.request

import pytest

from tests.e2e.console_socket import next_event, open_console_socket
from tests.e2e.stack import run_async, wait_for

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
