"""Agent frames are applied exactly once: a replayed id is acknowledged as a duplicate."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from bridge import registry
from caisey_agent import protocol as p
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def applied():
    calls = []
    previous = registry._handlers.get("prompt.update")
    registry._handlers["prompt.update"] = lambda endpoint, env: calls.append(env.id)
    yield calls
    if previous is None:
        registry._handlers.pop("prompt.update", None)
    else:
        registry._handlers["prompt.update"] = previous


async def test_replayed_agent_frame_is_applied_once(applied, db):
    enrolled = await database_sync_to_async(lambda: factories.endpoint(factories.client_group(factories.tenant())))()
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()
    body = p.PromptUpdate(prompt_id="p1", state="approved")
    first = await agent.send(body, id="frame-1")
    ack1 = await agent.recv()
    await agent.send(body, id="frame-1")
    ack2 = await agent.recv()
    assert first == "frame-1"
    assert (ack1.body.ref, ack1.body.duplicate) == ("frame-1", False)
    assert (ack2.body.ref, ack2.body.duplicate) == ("frame-1", True)
    assert applied == ["frame-1"]
    await agent.close()
