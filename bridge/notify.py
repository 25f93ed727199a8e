"""Doorbells to console pages and agent connections, rung only after the transaction commits."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from bridge.groups import (
    agent_group,
    console_endpoint_group,
    console_tenant_group,
    console_topic_group,
    console_user_group,
)

log = logging.getLogger(__name__)


def _send(group: str, message: dict[str, Any]) -> None:
    _send_many([(group, message)])


async def _ring(items: list[tuple[str, dict[str, Any]]]) -> None:
    """Each group's messages keep their order; different groups go out concurrently."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for group, message in items:
        by_group.setdefault(group, []).append(message)
    layer = get_channel_layer()

    async def ring_group(group: str, messages: list[dict[str, Any]]) -> None:
        try:
            for message in messages:
                await layer.group_send(group, message)
        except Exception:  # a lost doorbell delays a live update; the database still has the truth
            log.warning("channel layer send to %s failed", group, exc_info=True)

    await asyncio.gather(*(ring_group(group, messages) for group, messages in by_group.items()))


class _LoopSender:
    """In a server process, doorbells rung in its sync thread (where every database call of its
    sockets runs, one after another) are handed to one task on the server's event loop, and the
    thread goes on at once instead of waiting for Redis. One queue, drained in order: a group's
    messages still arrive in the order they were rung."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = loop.create_task(self._run(), context=contextvars.Context())  # process-wide: no caller's state

    async def _run(self) -> None:
        while True:
            items = list(await self.queue.get())
            while not self.queue.empty():
                items.extend(self.queue.get_nowait())
            await _ring(items)

    def submit(self, items: list[tuple[str, dict[str, Any]]]) -> bool:
        if self.task.done():
            return False
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, list(items))
        except RuntimeError:  # the loop was closed
            return False
        return True


_server: _LoopSender | None = None


def attach_to_running_loop() -> None:
    """Called by the socket consumers: from now on this process hands its doorbells to this loop."""
    global _server
    loop = asyncio.get_running_loop()
    if _server is None or _server.loop is not loop or _server.task.done():
        _server = _LoopSender(loop)


def _send_many(items: list[tuple[str, dict[str, Any]]]) -> None:
    """Ring now: handed to the server's loop where there is one (Daphne), else sent in one event
    loop of this thread's own (Celery, management commands: async_to_sync starts one per call)."""
    server = _server
    if server is not None and server.submit(items):
        return
    async_to_sync(_ring)(items)


class _Doorbells:
    """The doorbells of one transaction (or of one stretch of a savepoint in it), rung together,
    in the order they were rung, by the one ``transaction.on_commit`` hook this object is."""

    def __init__(self, savepoints: tuple) -> None:
        self.savepoints = savepoints  # connection.savepoint_ids when it was opened
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.once: set[tuple[str, str]] = set()  # agent doorbells already in this batch
        self.rung = False

    def __call__(self) -> None:
        self.rung = True
        _send_many(self.items)


# Per thread (Django's connections are) and per database alias: a weak reference to the batch
# opened last. It is our own record, not Django's list of hooks. Django holds the only strong
# reference, as the registered on_commit hook: it calls the batch once after the outermost
# commit, or drops it with a rolled-back transaction or savepoint, and with it goes the batch
# (CPython frees it at once; it holds no reference cycle). So a rolled-back batch is never
# rung, never appended to again, and nothing is kept for it: no leak, however many rollbacks.
_open = threading.local()


def _after_commit(group: str, message: dict[str, Any], *, once: bool = False) -> None:
    """Ring after the transaction commits; never for one that rolls back. Doorbells rung in one
    transaction join one batch, unless a savepoint starts or ends in between (then a new batch
    follows, to keep the order they were rung in and to drop only a rolled-back savepoint's own).
    ``once``: a message the batch already holds for the group is not added again (an agent's
    doorbell says "look at the database": two rung after one commit are one)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _send(group, message)
        return
    savepoints = tuple(connection.savepoint_ids)
    last: dict[str, weakref.ref] = _open.__dict__.setdefault("last", {})
    ref = last.get(connection.alias)
    batch = ref() if ref is not None else None
    if batch is None or batch.rung or batch.savepoints != savepoints:
        batch = _Doorbells(savepoints)
        last[connection.alias] = weakref.ref(batch)
        transaction.on_commit(batch, using=connection.alias)
    if once:
        key = (group, repr(sorted(message.items())))
        if key in batch.once:
            return
        batch.once.add(key)
    batch.items.append((group, message))


def console_event(
    *,
    tenant_id,
    endpoint_id=None,
    event: str,
    payload: dict[str, Any],
    topics: dict[str, Any] | None = None,
    tenant_wide: bool = True,
) -> None:
    """Tell console pages that something changed, after commit: the tenant's pages (unless
    ``tenant_wide`` is off), the endpoint's, and those subscribed to ``topics`` ({topic: id})."""
    message = {"type": "console.event", "event": event, "payload": payload}
    groups = [console_tenant_group(tenant_id)] if tenant_wide else []
    if endpoint_id is not None:
        groups.append(console_endpoint_group(endpoint_id))
    groups += [console_topic_group(topic, object_id) for topic, object_id in (topics or {}).items()]

    for group in groups:
        _after_commit(group, message)


def agent_doorbell(*, endpoint_id, reason: str) -> None:
    """Wake the connection serving an agent, wherever it is, to look at the database."""
    _after_commit(agent_group(endpoint_id), {"type": "agent.doorbell", "reason": reason}, once=True)


def ring_agent_now(*, endpoint_id, reason: str) -> None:
    _send(agent_group(endpoint_id), {"type": "agent.doorbell", "reason": reason})


def agent_replaced_now(*, endpoint_id) -> None:
    """Close the connection serving an endpoint's old identity (rung after a re-enrollment's commit):
    no connection has this empty id, so whichever is there goes (protocol.CLOSE_REPLACED)."""
    _send(agent_group(endpoint_id), {"type": "agent.replaced", "connection_id": ""})


def agent_revoked_now(*, endpoint_id) -> None:
    """Close the connection serving a revoked agent, wherever it is (rung after the revocation's commit)."""
    _send(agent_group(endpoint_id), {"type": "agent.revoked"})


def console_sign_in_changed_now(*, user_id) -> None:
    """A person logged out, was deactivated or changed their password: each of their console
    sockets re-checks its own session and closes if it is no longer good (rung after the commit)."""
    _send(console_user_group(user_id), {"type": "console.recheck"})
