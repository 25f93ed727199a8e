"""A per-socket frame rate limit on the agent socket (issue 11, item 15)."""

from __future__ import annotations

import pytest

from bridge.framerate import TokenBucket
from caisey_agent import protocol as p
from tests import factories
from tests.bridge.agent_client import FakeAgent


def test_the_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(now=0.4) is False  # 0.8 of a token
    assert bucket.take(now=0.5) is True  # one token after 0.5 s at 2/s
    assert [bucket.take(now=100.0) for _ in range(4)] == [True, True, True, False]  # never above the burst


@pytest.mark.django_db(transaction=True)
async def test_an_agent_flooding_frames_is_closed_with_a_clear_reason(settings):
    """Was: an agent could send frames at any rate, each costing the server a database trip."""
    settings.CAISEY = {**settings.CAISEY, "AGENT_FRAMES_PER_S": 1.0, "AGENT_FRAME_BURST": 5}
    from channels.db import database_sync_to_async

    enrolled = await database_sync_to_async(lambda: factories.endpoint(factories.client_group(factories.tenant())))()
    agent = FakeAgent()
    await agent.connect()
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    assert (await agent.recv()).type == "ack"
    for _ in range(4):  # the burst of 5, the hello included: answered
        await agent.send(p.Heartbeat(interval=60.0, mode="lazy"))
        assert (await agent.recv()).type == "ack"
    await agent.send(p.Heartbeat(interval=60.0, mode="lazy"))
    error = await agent.recv()
    assert error.type == "error" and error.body.code == "rate_limited"
    assert "frames/s" in error.body.detail and "closed" in error.body.detail
    assert await agent.expect_close() == p.CLOSE_RATE_LIMITED
