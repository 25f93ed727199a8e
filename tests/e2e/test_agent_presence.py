"""A real server, a real Celery worker and a real `caisey-agent` process: enroll, online, offline."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.console_socket import next_event, open_console_socket
from tests.e2e.stack import run_async, wait_for

pytestmark = pytest.mark.e2e

FAST_PRESENCE = {"CAISEY_HEARTBEAT_LAZY_S": "2", "CAISEY_PRESENCE_GRACE_S": "2"}


def test_enrolled_agent_shows_online_then_offline_when_killed(stack):
    login = stack.seed()
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="app01").start()
    console = stack.login(stack.port, login["username"], login["password"])
    wait_for(lambda: console.presence_on_list("app01") == "lazy", timeout=30, what="app01 online on the console")
    detail = console.get(f"/endpoints/{agent.endpoint_id}/")
    assert "Machine context" in detail and "Operating system" in detail and "Linux" in detail

    async def watch_kill():
        async with open_console_socket(console) as ws:
            agent.kill(signal.SIGKILL)
            return await next_event(ws, event="endpoint.presence", where=lambda p: p["hostname"] == "app01", timeout=30)

    payload = run_async(watch_kill())
    assert payload["presence"] == "offline"
    assert console.presence_on_list("app01") == "offline"


@pytest.mark.parametrize("stack", [FAST_PRESENCE], indirect=True)
def test_frozen_agent_goes_offline_by_missed_heartbeats(stack):
    """SIGSTOP keeps the TCP connection open: only the heartbeat-derived presence notices."""
    login = stack.seed()
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="laptop7").start()
    console = stack.login(stack.port, login["username"], login["password"])
    wait_for(lambda: console.presence_on_list("laptop7") == "lazy", timeout=30, what="laptop7 online")

    async def watch_freeze():
        async with open_console_socket(console) as ws:
            agent.proc.send_signal(signal.SIGSTOP)
            return await next_event(
                ws, event="endpoint.presence", where=lambda p: p["hostname"] == "laptop7", timeout=40
            )

    try:
        payload = run_async(watch_freeze())
        assert payload["presence"] == "offline"
        assert console.presence_on_list("laptop7") == "offline"
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    # Thawed, it heartbeats again and comes back without reconnecting.
    wait_for(lambda: console.presence_on_list("laptop7") == "lazy", timeout=30, what="laptop7 back")


def test_revoked_agent_is_refused_and_stops_retrying(stack):
    stack.seed()
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="stolen").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    stack.django(
        "from caisey.actors import Party; from endpoints import services; from endpoints.models import Endpoint;"
        f"services.endpoint_revoke(actor=Party.OPERATOR, endpoint=Endpoint.all_tenants.get(pk='{agent.endpoint_id}'), reason='stolen laptop')"
    )
    assert agent.proc.wait(timeout=30) == 3
    assert "revoked" in agent.log_text()
