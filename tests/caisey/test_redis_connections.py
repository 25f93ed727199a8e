"""Redis connections stay few: the channel layer bounds its concurrent sends, the rate limiter shares one client."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings


@pytest.mark.skipif(settings.CHANNEL_LAYER_KIND != "pubsub", reason="the pub/sub layer's own bound")
@pytest.mark.asyncio
async def test_a_burst_of_group_sends_is_delivered_through_a_few_connections():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("burst-test", channel)
    try:
        await asyncio.gather(*(layer.group_send("burst-test", {"type": "x", "n": n}) for n in range(300)))
        received = sorted([(await layer.receive(channel))["n"] for _ in range(300)])
        assert received == list(range(300))
        pool = layer._get_layer()._shards[0]._redis.connection_pool
        opened = len(pool._available_connections) + len(pool._in_use_connections)
        assert opened <= layer.max_concurrent_sends + 1, opened
    finally:
        await layer.group_discard("burst-test", channel)


def test_rate_limits_use_one_cache_client_whatever_the_context():
    """Django's cache is context-local: each agent socket's context would open its own Redis
    connection. The rate limiter keeps one for the process."""
    import contextvars

    from caisey import ratelimit

    assert ratelimit.hit("t", "a", limit=5, window=60)
    client = ratelimit._shared_cache()
    assert contextvars.Context().run(ratelimit.hit, "t", "a", limit=5, window=60)
    assert ratelimit._shared_cache() is client
