"""The channel layer Caisey runs: channels-redis' pub/sub layer with a bound on concurrent sends.

redis-py's connection pool opens a connection for every command in flight and keeps it open for
good: a reconnect storm or a bulk run's thousands of doorbells left a Daphne process holding about
one Redis connection per connected agent (bench/README.md). Sends wait for one of a few slots
instead; subscriptions already share one connection per process.
"""

from __future__ import annotations

import asyncio

from channels_redis import pubsub


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    def __init__(self, *args, max_concurrent_sends: int = 32, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_concurrent_sends = max_concurrent_sends
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            # async_to_sync runs each call in a loop of its own: forget the closed ones.
            self._slots = {known: s for known, s in self._slots.items() if not known.is_closed()}
            slot = self._slots[loop] = asyncio.Semaphore(self.max_concurrent_sends)
        return slot

    async def send(self, channel, message) -> None:
        async with self._slot():
            await self._get_layer().send(channel, message)

    async def group_send(self, group, message) -> None:
        async with self._slot():
            await self._get_layer().group_send(group, message)
