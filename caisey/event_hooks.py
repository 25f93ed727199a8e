"""Events the outside hears that are not a session's transcript entry (webhooks, issue 14 item 1):
a bulk run finished, a share link viewed, an endpoint's connectivity changed while it is in no open
session. The apps that make these changes (sessions_app, bridge) call ``event_emit`` inside the
change's transaction; the webhooks app registers its outbox writer with ``on_events`` at start-up
(``integrations/apps.py``), so the delivery rows commit or roll back with the change. With no
listener registered an emit does nothing. Like ``caisey.audit_hooks``: typed, registered once, no
Django signal; the kernel imports no app, so every layer may call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class OutsideEvent:
    """One event of ``tenant_id``: ``type`` is a webhook event type (``bulk_run.finished``, ...),
    ``data`` its payload's ``data`` (JSON-serialisable), ``endpoint_id`` the endpoint it concerns."""

    tenant_id: uuid.UUID
    type: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    endpoint_id: uuid.UUID | None = None


EventListener = Callable[[Sequence[OutsideEvent]], None]
_listeners: list[EventListener] = []


def on_events(listener: EventListener) -> EventListener:
    """Register ``listener`` (once; registering it again is a no-op)."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def event_emit(events: Sequence[OutsideEvent]) -> None:
    """Hand ``events`` to every listener; call it inside the transaction of the change."""
    if not events:
        return
    for listener in _listeners:
        listener(events)
