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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caisey.hooks import Hook


@dataclass(frozen=True)
class OutsideEvent:
    """One event of ``tenant_id``: ``type`` is a webhook event type (``bulk_run.finished``, ...),
    ``data`` its payload's ``data`` (JSON-serialisable), ``endpoint_id`` the endpoint it concerns."""

    tenant_id: uuid.UUID
    type: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    endpoint_id: uuid.UUID | None = None


_hook: Hook[OutsideEvent] = Hook()
# Listeners register at start-up; writers emit inside the transaction of the change.
on_events = _hook.register
event_emit = _hook.emit
