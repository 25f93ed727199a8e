"""Doorbells to console pages and agent connections, rung only after the transaction commits."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from bridge.groups import agent_group, console_endpoint_group, console_tenant_group, console_topic_group

log = logging.getLogger(__name__)


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # a lost doorbell delays a live update; the database still has the truth
        log.warning("channel layer send to %s failed", group, exc_info=True)


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

    def ring() -> None:
        for group in groups:
            _send(group, message)

    transaction.on_commit(ring)


def agent_doorbell(*, endpoint_id, reason: str) -> None:
    """Wake the connection serving an agent, wherever it is, to look at the database."""
    transaction.on_commit(lambda: ring_agent_now(endpoint_id=endpoint_id, reason=reason))


def ring_agent_now(*, endpoint_id, reason: str) -> None:
    _send(agent_group(endpoint_id), {"type": "agent.doorbell", "reason": reason})
