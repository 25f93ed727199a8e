"""Fault drills with real processes: kill Daphne mid-flight, SIGKILL Celery mid-retry, an agent
away past the retry budget, and a slow, flaky network. Nothing is lost, nothing runs twice."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pytest

from tests.e2e import helpers as h
from tests.e2e.stack import run_async, wait_for

pytestmark = pytest.mark.e2e

FINAL = ("succeeded", "failed", "timed_out", "cancelled", "expired")


def enroll_many(stack, count: int, prefix: str) -> list:
    token = stack.token("acme", "erp", max_uses=count)
    agents: list = [None] * count

    def enroll(i: int) -> None:
        agents[i] = stack.enroll_agent(stack.port, token, name=f"{prefix}{i:02d}")

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return agents


def queue_effects(stack, tech: str, endpoint_ids: list[str], per_endpoint: int, effects_dir) -> list[str]:
    """Each action appends its own id to a file: exactly-once is then a matter of counting lines."""
    code = h.PRELUDE.format(tech=tech) + (
        "ids = [];\n"
        f"for eid in {endpoint_ids!r}:\n"
        "    s = sessions.session_open(actor=tech, endpoint=Endpoint.all_tenants.get(pk=eid), reason='drill')\n"
        f"    for n in range({per_endpoint}):\n"
        "        a = services.action_request(actor=tech, session=s, kind='shell',"
        f" params={{'command': 'echo $CAISEY_ACTION_ID >> {effects_dir}/' + eid + '.log'}})\n"
        "        ids.append(str(a.pk))\n"
        "print(json.dumps(ids))"
    )
    return stack.json(code)


def statuses(stack, ids: list[str]) -> collections.Counter:
    return collections.Counter(
        stack.json(
            "import json; from sessions_app.models import Action;"
            f"print(json.dumps(list(Action.all_tenants.filter(pk__in={ids!r}).values_list('status', flat=True))))"
        )
    )


def effects(effects_dir) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in effects_dir.glob("*.log"):
        counts.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    return counts


def assert_exactly_once(stack, ids, effects_dir, timeout: float = 180) -> None:
    wait_for(
        lambda: statuses(stack, ids).get("succeeded", 0) == len(ids),
        timeout=timeout,
        interval=1,
        what=f"all {len(ids)} actions to succeed (now {dict(statuses(stack, ids))})",
    )
    ran = effects(effects_dir)
    assert set(ran) == set(ids), f"missing effects: {set(ids) - set(ran)}"
    assert max(ran.values()) == 1, f"ran twice: {[k for k, v in ran.items() if v > 1]}"


def test_kill_daphne_with_200_messages_to_20_agents_in_flight(stack):
    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # drills on delivery: commands run unasked
    agents = enroll_many(stack, 20, "node")
    for agent in agents:
        agent.start()
    wait_for(lambda: all("connected as" in a.log_text() for a in agents), timeout=60, what="20 agents connected")
    effects_dir = stack.workdir / "effects"
    effects_dir.mkdir()
    ids = queue_effects(stack, login["username"], [a.endpoint_id for a in agents], 10, effects_dir)
    assert len(ids) == 200
    time.sleep(0.5)  # some delivered, some in flight, some still queued
    stack.stop_server(stack.port, signal.SIGKILL)
    time.sleep(2)
    stack.start_server(stack.port)
    assert_exactly_once(stack, ids, effects_dir)


FAST_RETRY = {
    "CAISEY_HEARTBEAT_LAZY_S": "2",
    "CAISEY_HEARTBEAT_ACTIVE_S": "2",
    "CAISEY_PRESENCE_GRACE_S": "2",
    "CAISEY_OUTBOX_SWEEP_S": "0.5",
    "CAISEY_OUTBOX_MAX_ATTEMPTS": "3",
    "CAISEY_OUTBOX_BACKOFF_BASE_S": "0.3",
    "CAISEY_OUTBOX_BACKOFF_CAP_S": "0.6",
    "CAISEY_OUTBOX_ACK_TIMEOUT_S": "0.3",
}


@pytest.mark.parametrize("stack", [FAST_RETRY], indirect=True)
def test_sigkill_celery_worker_mid_retry_loses_and_doubles_nothing(stack):
    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # drills on delivery: commands run unasked
    agents = enroll_many(stack, 3, "away")
    effects_dir = stack.workdir / "effects"
    effects_dir.mkdir()
    # The agents are away: the actions wait in the outbox while the sweep keeps retrying.
    ids = queue_effects(stack, login["username"], [a.endpoint_id for a in agents], 10, effects_dir)
    wait_for(lambda: "outbox_sweep" in (stack.workdir / "celery.log").read_text(), timeout=30, what="sweeps running")
    time.sleep(2)
    os.killpg(stack.worker.pid, signal.SIGKILL)  # its process group: the pool children die with it
    stack.worker.wait(timeout=10)
    stack.worker = stack.start_worker()
    for agent in agents:
        agent.start()
    assert_exactly_once(stack, ids, effects_dir)


@pytest.mark.parametrize("stack", [FAST_RETRY], indirect=True)
def test_agent_away_past_the_budget_fails_visibly_and_a_resend_delivers(stack):
    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # drills on delivery: commands run unasked
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="sleepy").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    session = stack.json(h.open_session(login["username"], agent.endpoint_id))
    agent.proc.send_signal(signal.SIGSTOP)  # frozen: the socket stays open, nothing answers
    action = stack.json(h.run(login["username"], session, "shell", {"command": "echo back-again"}))
    wait_for(
        lambda: stack.json(h.action_state(action))["status"] == "failed_to_deliver",
        timeout=60,
        what="failed_to_deliver",
    )
    agent.kill(signal.SIGKILL)  # what the frozen process had buffered is lost with it
    attempts = stack.json(
        "import json; from bridge.models import OutboxMessage;"
        f"m = OutboxMessage.all_tenants.get(ref_id='{action}', kind='action.run');"
        "print(json.dumps([m.status, m.attempts, m.last_error]))"
    )
    assert attempts[0] == "failed_to_deliver" and attempts[1] == 3 and attempts[2]
    agent.start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent back")
    time.sleep(2)
    assert stack.json(h.action_state(action))["status"] == "failed_to_deliver"  # no silent redelivery
    stack.django(
        h.PRELUDE.format(tech=login["username"])
        + f"services.action_resend(actor=tech, action=Action.all_tenants.get(pk='{action}'))"
    )
    result = wait_for(
        lambda: (st := stack.json(h.action_state(action)))["status"] in FINAL and st,
        timeout=60,
        what="resent action to finish",
    )
    assert result["status"] == "succeeded" and "back-again" in result["output"]


DEGRADE = {
    "CAISEY_HEARTBEAT_LAZY_S": "2",
    "CAISEY_HEARTBEAT_ACTIVE_S": "2",
    "CAISEY_PRESENCE_GRACE_S": "3",
    "CAISEY_DEGRADED_P95_MS": "600",
    "CAISEY_DEGRADED_WINDOW_S": "20",
    "CAISEY_DEGRADED_RECONNECTS": "3",
}


@pytest.mark.parametrize("stack", [DEGRADE], indirect=True)
def test_slow_flaky_network_makes_the_endpoint_degraded_then_active_again(stack):
    from tests.e2e.proxy import FaultyProxy

    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # drills on delivery: commands run unasked
    with FaultyProxy(stack.port) as proxy:
        agent = stack.enroll_agent(proxy.port, stack.token("acme", "erp"), name="branch01").start()
        console = stack.login(stack.port, login["username"], login["password"])
        wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected via proxy")
        session = stack.json(h.open_session(login["username"], agent.endpoint_id))
        wait_for(lambda: console.presence_on_list("branch01") == "active", timeout=30, what="active")
        proxy.latency = 0.8
        for _ in range(3):
            stack.json(h.run(login["username"], session, "tcp_connect", {"host": "127.0.0.1", "port": stack.port}))
        for _ in range(3):
            time.sleep(3)
            proxy.drop_connections()
        wait_for(lambda: console.presence_on_list("branch01") == "degraded", timeout=60, what="degraded")
        # The list and the endpoint page are two reads: under load the proxy's dropped connections can
        # move presence between them (CI 2026-12-05 read "degraded" on the list, then not on the
        # page). Wait for the page to say it too, with the figures that explain it.
        wait_for(
            lambda: (
                "Degraded" in (page := console.get(f"/endpoints/{agent.endpoint_id}/"))
                and ("reconnects" in page or "latency" in page)
            ),
            timeout=30,
            what="the endpoint page says degraded and why",
        )
        proxy.latency = 0.0
        wait_for(
            lambda: console.presence_on_list("branch01") == "active",
            timeout=90,
            interval=2,
            what="active again once the path clears",
        )


@pytest.mark.parametrize("stack", [{"own_redis": True, "CAISEY_OUTBOX_SWEEP_S": "1"}], indirect=True)
def test_redis_restart_during_live_traffic_loses_nothing(stack):
    from tests.e2e.console_socket import next_event, open_console_socket

    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))  # drills on delivery: commands run unasked
    agents = enroll_many(stack, 5, "live")
    for agent in agents:
        agent.start()
    wait_for(lambda: all("connected as" in a.log_text() for a in agents), timeout=60, what="agents connected")
    effects_dir = stack.workdir / "effects"
    effects_dir.mkdir()
    ids = queue_effects(stack, login["username"], [a.endpoint_id for a in agents], 10, effects_dir)
    stack.restart_redis(down_for=2)
    more = queue_effects(stack, login["username"], [a.endpoint_id for a in agents], 4, effects_dir)
    assert_exactly_once(stack, ids + more, effects_dir)
    # Console sockets work again too: a fresh one receives live presence.
    console = stack.login(stack.port, login["username"], login["password"])

    async def watch():
        async with open_console_socket(console) as ws:
            agents[0].kill(signal.SIGKILL)
            return await next_event(ws, event="endpoint.presence", where=lambda p: p["hostname"] == "live00")

    assert run_async(watch())["presence"] == "offline"
