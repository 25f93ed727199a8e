"""Doorbells to console pages and agent connections, rung only after the transaction commits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from bridge.groups import agent_group, console_endpoint_group, console_tenant_group, console_topic_group

log = logging.getLogger(__name__)


def _send(group: str, message: dict[str, Any]) -> None:
    _send_many([(group, message)])


def _send_many(items: list[tuple[str, dict[str, Any]]]) -> None:
    """Send in one event loop (async_to_sync starts one per call: a bulk run rings thousands).
    Each group's messages keep their order; different groups go out concurrently."""
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

    async def ring_all() -> None:
        await asyncio.gather(*(ring_group(group, messages) for group, messages in by_group.items()))

    async_to_sync(ring_all)()


class _Doorbells:
    """The doorbells of one transaction (or savepoint), rung together once it commits."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self) -> None:
        _send_many(self.items)


def _after_commit(group: str, message: dict[str, Any]) -> None:
    """Ring after the transaction commits; never for one that rolls back. Doorbells queued in the
    same savepoint join one batch (Django drops a rolled-back savepoint's hooks, batch included)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _send(group, message)
        return
    hooks = connection.run_on_commit
    if hooks and isinstance(hooks[-1][1], _Doorbells) and hooks[-1][0] == set(connection.savepoint_ids):
        hooks[-1][1].items.append((group, message))
        return
    batch = _Doorbells()
    batch.items.append((group, message))
    transaction.on_commit(batch)


def console_event(
    *, tenant_id, endpoint_id=None, event: str, payload: dict[str, Any], topics: dict[str, Any] | None = None,
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
    _after_commit(agent_group(endpoint_id), {"type": "agent.doorbell", "reason": reason})


def ring_agent_now(*, endpoint_id, reason: str) -> None:
    _send(agent_group(endpoint_id), {"type": "agent.doorbell", "reason": reason})
