"""Coalesced last-seen times: heartbeats land in process memory, flushed once a second.

One ORM write per heartbeat caps a process at a few hundred heartbeats per
second; one batched UPDATE a second costs milliseconds for thousands of
endpoints. A flush lost with a crashed process loses at most a second of
last-seen, which presence tolerates by design (missed beats plus grace).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from caisey import tenancy
from endpoints.services import endpoint_touch_many

log = logging.getLogger(__name__)


def _touch_many(batch: dict) -> None:
    with tenancy.system():  # this process's agents, of every tenant: system work, named
        endpoint_touch_many(seen=batch)


class LastSeenBuffer:
    def __init__(self) -> None:
        self._seen: dict[object, datetime] = {}
        self._task: asyncio.Task | None = None

    def touch(self, endpoint_id) -> None:
        self._seen[endpoint_id] = timezone.now()
        self._ensure_flusher()

    def forget(self, endpoint_id) -> None:
        self._seen.pop(endpoint_id, None)

    async def flush(self) -> None:
        batch, self._seen = self._seen, {}
        if not batch:
            return
        try:
            await database_sync_to_async(_touch_many)(batch)
        except Exception:
            for endpoint_id, seen_at in batch.items():  # keep them for the next flush
                self._seen.setdefault(endpoint_id, seen_at)
            raise

    def _ensure_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # Its own, empty context: the process-wide flusher inherits no socket's state.
            self._task = loop.create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        interval = settings.CAISEY["LAST_SEEN_FLUSH_S"]
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("flushing last-seen times failed; retrying next interval")


buffer = LastSeenBuffer()
