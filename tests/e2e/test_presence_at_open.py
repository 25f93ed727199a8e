"""Presence at session open with a real server and a real agent (issue 15 item 2): a session opened
on a lazy agent whose last beat is older than the active cadence's deadline is shown waking, then
active, live on the console socket and on the session page, and never offline or read-only.

The cadences are shortened so the test needs seconds, not a minute: active every 2 s (offline 6 s
after the last beat), lazy every 30 s (offline after 62 s)."""

from __future__ import annotations

import pytest

from tests.e2e import helpers as h
from tests.e2e.console_socket import next_event, open_console_socket
from tests.e2e.stack import run_async, wait_for

pytestmark = pytest.mark.e2e

CADENCES = {"CAISEY_HEARTBEAT_ACTIVE_S": "2", "CAISEY_HEARTBEAT_LAZY_S": "30", "CAISEY_PRESENCE_GRACE_S": "2"}
STALE_S = 8  # past the active deadline (6 s), well before the lazy one (62 s)


def open_if_stale(tech: str, endpoint_id: str) -> str:
    """Open a session (waking the endpoint) once its last lazy beat is STALE_S old; else null."""
    return h.PRELUDE.format(tech=tech) + (
        "from django.utils import timezone;"
        f"e = Endpoint.all_tenants.get(pk='{endpoint_id}');"
        "age = (timezone.now() - e.last_seen_at).total_seconds();"
        f"ok = e.mode == 'lazy' and {STALE_S} < age < 25;"
        "s = sessions.session_open(actor=tech, endpoint=e, reason='e2e presence') if ok else None;"
        "print(json.dumps({'session': str(s.pk), 'age': age, 'offline': s.opened_offline} if s else None))"
    )


@pytest.mark.parametrize("stack", [CADENCES], indirect=True)
def test_a_session_on_a_lazy_agent_last_seen_long_ago_shows_waking_then_active_without_reload(stack):
    login = stack.seed()
    tech = login["username"]
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="vm").start()
    console = stack.login(stack.port, tech, login["password"])
    wait_for(lambda: console.presence_on_list("vm") == "lazy", timeout=60, what="vm online, lazy")

    async def open_and_watch() -> tuple[dict, list[str]]:
        async with open_console_socket(console) as ws:
            opened = wait_for(
                lambda: stack.json(open_if_stale(tech, agent.endpoint_id)), timeout=90, interval=1, what="a stale beat"
            )
            states: list[str] = []

            def settled(payload: dict) -> bool:
                if payload["hostname"] != "vm":
                    return False
                states.append(payload["state"])
                return payload["state"] not in ("lazy", "waking")

            await next_event(ws, event="endpoint.presence", where=settled, timeout=30)
            return opened, states

    opened, states = run_async(open_and_watch())
    assert opened["age"] > STALE_S and opened["offline"] is False
    assert states[-1] == "active", states  # never offline on the way
    assert "offline" not in states and "waking" in states
    assert "mode set to active" in agent.log_text()
    page = console.get(f"/sessions/{opened['session']}/")
    assert 'data-field="presence" title="connected, heartbeat every 2 s">active<' in page
    assert 'id="readonly-banner"' not in page
