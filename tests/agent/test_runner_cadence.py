"""mode.set changes the agent's heartbeat cadence at once: a beat now, then the new interval."""

from __future__ import annotations

import asyncio
import time

import pytest

from caisey_agent import protocol as p
from caisey_agent.runner import Agent
from caisey_agent.state import AgentState, Identity


@pytest.mark.asyncio
async def test_mode_set_active_beats_at_once_then_at_the_new_cadence(tmp_path, monkeypatch):
    state = AgentState(tmp_path / "state")
    state.save_identity(Identity(server="http://127.0.0.1:1", endpoint_id="e", credential="c", machine_id="m"))
    agent = Agent(state)
    monkeypatch.setattr("caisey_agent.runner.MIN_HEARTBEAT_S", 0.1)  # a fast cadence for the test
    agent.interval = 60.0  # lazy: the first beat would be a minute away
    beats: list[float] = []
    monkeypatch.setattr(agent, "prompt_reports", lambda: [])

    async def send(body, *, id=None) -> None:
        if isinstance(body, p.Heartbeat):
            beats.append(body.interval)

    monkeypatch.setattr(agent, "send", send)
    task = asyncio.create_task(agent._heartbeats())
    try:
        await asyncio.sleep(0.05)
        assert beats == []
        await agent._dispatch(p.envelope(p.ModeSet(mode="active", heartbeat_interval=0.2)))
        await asyncio.sleep(0.05)
        assert beats == [0.2]  # at once, not when the lazy minute runs out
        await asyncio.sleep(0.45)
        assert 2 <= len(beats) <= 4  # then every 0.2 s
    finally:
        task.cancel()


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        (0.0, 1.0),
        (-5.0, 1.0),
        (0.01, 1.0),
        (10.0, 10.0),
        (60.0, 60.0),
        (1e9, 3600.0),
        (float("inf"), 3600.0),
        (float("nan"), 60.0),
    ],
)
@pytest.mark.asyncio
async def test_the_agent_clamps_the_heartbeat_interval_the_server_asks_for(tmp_path, asked, used):
    """Was: any interval from the server was taken, 0 included (a heartbeat loop without a pause)."""
    state = AgentState(tmp_path / "state")
    state.save_identity(Identity(server="http://127.0.0.1:1", endpoint_id="e", credential="c", machine_id="m"))
    agent = Agent(state)
    await agent._dispatch(p.envelope(p.ModeSet(mode="active", heartbeat_interval=asked)))
    assert agent.interval == used


@pytest.mark.asyncio
async def test_heartbeats_carry_the_machine_context_again_every_context_every_seconds(tmp_path, monkeypatch):
    """The server keeps the last known state of the machine, not the one it had at connect."""
    state = AgentState(tmp_path / "state")
    state.save_identity(Identity(server="http://127.0.0.1:1", endpoint_id="e", credential="c", machine_id="m"))
    agent = Agent(state)
    agent.interval = 0.1
    agent.context_every = 0.35
    agent.context_sent_at = time.monotonic()  # the hello carried one just now
    monkeypatch.setattr(agent, "prompt_reports", lambda: [])
    monkeypatch.setattr("caisey_agent.machine.context", lambda hostname="": {"hostname": "pc01", "uptime_seconds": 7})
    beats: list[dict] = []

    async def send(body, *, id=None) -> None:
        if isinstance(body, p.Heartbeat):
            beats.append(body.machine)

    monkeypatch.setattr(agent, "send", send)
    task = asyncio.create_task(agent._heartbeats())
    try:
        await asyncio.sleep(1.0)
    finally:
        task.cancel()
    with_context = [b for b in beats if b]
    assert len(beats) >= 6 and 1 <= len(with_context) <= 3, beats  # now and then, not every beat
    assert with_context[0] == {"hostname": "pc01", "uptime_seconds": 7}
