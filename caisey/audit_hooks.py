"""The audit journal's hook: how the apps that write audited events (sessions_app's transcript,
endpoints' security log) hand each event to the audit stream without importing it.

The writers call ``audit_emit`` inside the transaction of the event they wrote; the audit app
registers its journal writer with ``on_audit_events`` at start-up (``audit/apps.py``), so the
journal row commits or rolls back with the event (docs/integrations.md, "Audit stream"). With
no listener registered (the audit app not installed) an emit does nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caisey.hooks import Hook


@dataclass(frozen=True)
class AuditEvent:
    """One audited event, as the stream tells it. ``event_id`` is stable: a resend carries it."""

    tenant_id: uuid.UUID
    category: str  # "transcript" | "security"
    kind: str
    at: datetime
    actor: str
    event_id: uuid.UUID
    session_id: uuid.UUID | None = None
    endpoint_id: uuid.UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)


_hook: Hook[AuditEvent] = Hook()
# Listeners register at start-up; writers emit inside the transaction of the change.
on_audit_events = _hook.register
audit_emit = _hook.emit
