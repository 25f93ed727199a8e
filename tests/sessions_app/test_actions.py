"""An action's life over the real agent socket: queued -> dispatched -> running -> succeeded."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from caisey_agent import protocol as p
from sessions_app.models import Action, ActionOutput, ActionStatus, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services import sessions
from sessions_app.services.transcript import transcript_verify
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def setup_world():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    # These tests are about running actions, not approving them: a policy that asks for nothing
    # (a new group's default now asks for approval of shell and built-in commands).
    factories.policy(group, requires="none")
    enrolled = factories.endpoint(group, hostname="app01")
    tech = factories.technician(tenant)
    return enrolled, tech


async def connected(enrolled) -> FakeAgent:
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()
    return agent


async def recv_type(agent, type_: str) -> p.Envelope:
    while True:
        env = await agent.recv()
        if env.type == type_:
            return env


async def test_action_runs_and_every_step_is_in_the_transcript():
    enrolled, tech = await database_sync_to_async(setup_world)()
    agent = await connected(enrolled)
    session = await database_sync_to_async(sessions.session_open)(actor=tech, endpoint=enrolled.endpoint, reason="T-1")
    wake = await recv_type(agent, "mode.set")
    assert wake.body.mode == "active"
    await agent.send(p.Ack(ref=wake.id))
    action = await database_sync_to_async(services.action_request)(
        actor=tech, session=session, kind="tcp_connect", params={"host": "db01", "port": "1433"}
    )
    run = await recv_type(agent, "action.run")
    assert run.body.action_id == str(action.pk) and run.body.params == {"host": "db01", "port": 1433, "timeout": 5}
    await agent.send(p.Ack(ref=run.id))
    await agent.send(p.ActionOutput(action_id=str(action.pk), seq=0, stream="status", data="started"))
    await agent.send(p.ActionOutput(action_id=str(action.pk), seq=1, stream="stdout", data="connected in 3 ms\n"))
    await agent.send(
        p.ActionResult(
            action_id=str(action.pk),
            status="succeeded",
            exit_code=0,
            result={"data": {"ms": 3}, "text": "ok"},
            started_at=1.0e9,
            finished_at=1.0e9 + 1,
        )
    )
    for _ in range(3):  # output, output, result (an ack itself is not acknowledged)
        await recv_type(agent, "ack")

    def check():
        a = Action.all_tenants.get(pk=action.pk)
        assert a.status == ActionStatus.SUCCEEDED and a.exit_code == 0 and a.result["data"] == {"ms": 3}
        assert a.duration_s == 1.0
        assert a.conditions_at_dispatch["connectivity"] in ("active", "lazy", "waking")
        assert a.conditions_at_completion is not None
        assert list(ActionOutput.all_tenants.filter(action=a).values_list("data", flat=True)) == ["connected in 3 ms\n"]
        kinds = list(TranscriptEntry.all_tenants.filter(session=session).values_list("kind", "actor"))
        assert kinds == [
            ("session.opened", f"user:{tech.username}"),
            ("action.queued", f"user:{tech.username}"),
            ("action.dispatched", "bridge"),
            ("action.running", "agent"),
            ("action.output", "agent"),
            ("action.result", "agent"),
        ]
        assert transcript_verify(session_id=session.pk)[0]

    await database_sync_to_async(check)()
    await agent.close()


async def test_cancel_reaches_the_agent_and_a_late_result_is_ignored():
    enrolled, tech = await database_sync_to_async(setup_world)()
    agent = await connected(enrolled)
    session = await database_sync_to_async(sessions.session_open)(actor=tech, endpoint=enrolled.endpoint)
    action = await database_sync_to_async(services.action_request)(
        actor=tech, session=session, kind="shell", params={"command": "sleep 60"}
    )
    run = await recv_type(agent, "action.run")
    await agent.send(p.Ack(ref=run.id))
    await agent.send(p.ActionOutput(action_id=str(action.pk), seq=0, stream="status", data="started"))
    await recv_type(agent, "ack")  # of the "started" output
    await database_sync_to_async(services.action_cancel)(actor=tech, action=action)
    cancel = await recv_type(agent, "action.cancel")
    assert cancel.body.action_id == str(action.pk)
    await agent.send(p.ActionResult(action_id=str(action.pk), status="succeeded", exit_code=0))
    await recv_type(agent, "ack")

    def check():
        a = Action.all_tenants.get(pk=action.pk)
        assert a.status == ActionStatus.CANCELLED
        assert TranscriptEntry.all_tenants.filter(session=session, kind="action.result_ignored").exists()

    await database_sync_to_async(check)()
    await agent.close()


async def test_an_agent_cannot_report_on_another_endpoints_action():
    enrolled, tech = await database_sync_to_async(setup_world)()
    other, other_tech = await database_sync_to_async(setup_world)()
    session = await database_sync_to_async(sessions.session_open)(actor=other_tech, endpoint=other.endpoint)
    theirs = await database_sync_to_async(services.action_request)(
        actor=other_tech, session=session, kind="system_summary", params={}
    )
    agent = await connected(enrolled)
    await agent.send(p.ActionResult(action_id=str(theirs.pk), status="failed", error="forged"))
    await recv_type(agent, "ack")
    status = await database_sync_to_async(lambda: Action.all_tenants.get(pk=theirs.pk).status)()
    assert status == ActionStatus.QUEUED
    await agent.close()
