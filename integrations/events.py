"""Webhook events: what a transcript entry means to the outside, and the versioned envelope.

Every change in a session writes a transcript entry in the change's transaction; sessions_app
calls ``events_from_transcript`` there (``sessions_app.hooks``), so an event's delivery rows
commit or roll back with the change itself (no event for a change that did not happen, no change
without its event). The envelope (docs/integrations.md, version 1)::

    {"id": "<uuid, stable across retries>", "type": "prompt.issued", "version": 1,
     "created_at": "<ISO 8601>", "tenant": "<tenant uuid>", "data": {...}}
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from caisey import tenancy
from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.tasks import deliveries_enqueue
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import SupportSession, TranscriptEntry

VERSION = 1

# Every event type a destination may subscribe to, with its meaning (the console's filter, the docs).
EVENT_TYPES: dict[str, str] = {
    "session.opened": "A support session was opened",
    "session.closed": "A support session was closed",
    "action.finished": "An action finished successfully",
    "action.failed": "An action failed (or the endpoint refused it)",
    "action.timed_out": "An action timed out",
    "action.failed_to_deliver": "An action could not be delivered to its endpoint",
    "prompt.issued": "An approval prompt was issued and waits for an answer",
    "prompt.decided": "An approval prompt was approved or denied",
    "prompt.expired": "An approval prompt expired unanswered",
    "prompt.escalated": "An approval prompt was escalated to the client's approver",
    "endpoint.degraded": "The path to an endpoint in an open session became degraded",
    "endpoint.offline": "An endpoint in an open session went offline",
    "endpoint.back": "An endpoint in an open session is reachable again",
}
# What the chat formats render (Slack, Teams): what a person must act on now.
CHAT_EVENT_TYPES = ("prompt.issued", "prompt.escalated", "endpoint.offline")
TEST_EVENT = "webhook.test"

_BY_KIND = {
    K.SESSION_OPENED: "session.opened",
    K.SESSION_CLOSED: "session.closed",
    K.ACTION_TIMED_OUT: "action.timed_out",
    K.ACTION_FAILED_TO_DELIVER: "action.failed_to_deliver",
    K.PROMPT_PENDING: "prompt.issued",
    K.PROMPT_APPROVED: "prompt.decided",
    K.PROMPT_DENIED: "prompt.decided",
    K.PROMPT_EXPIRED: "prompt.expired",
    K.PROMPT_ESCALATED: "prompt.escalated",
}
# Entry data not copied into an event: an action's result may be large (the API serves it whole).
_DROPPED = ("result", "bridge")


def event_type_of(entry: TranscriptEntry) -> str | None:
    if entry.kind == K.ACTION_RESULT:
        return "action.finished" if (entry.data or {}).get("status") == "succeeded" else "action.failed"
    if entry.kind == K.BRIDGE_CONNECTIVITY:
        to = (entry.data or {}).get("to")
        return {"degraded": "endpoint.degraded", "offline": "endpoint.offline"}.get(str(to), "endpoint.back")
    return _BY_KIND.get(entry.kind)  # type: ignore[call-overload]


def envelope(*, event_id: uuid.UUID, event_type: str, tenant_id: Any, data: dict, at=None) -> dict:
    return {
        "id": str(event_id),
        "type": event_type,
        "version": VERSION,
        "created_at": (at or timezone.now()).isoformat(),
        "tenant": str(tenant_id),
        "data": data,
    }


def _data(entry: TranscriptEntry, session: Mapping[str, Any]) -> dict:
    detail = {k: v for k, v in (entry.data or {}).items() if k not in _DROPPED}
    return {
        "session": {"id": str(entry.session_id), "reason": session["reason"]},
        "endpoint": {"id": str(session["endpoint_id"]), "hostname": session["endpoint__hostname"]},
        "action": str(entry.action_id) if entry.action_id else None,
        "transcript": {"index": entry.index, "kind": entry.kind, "actor": entry.actor},
        "detail": detail,
    }


def events_from_transcript(entries: Sequence[TranscriptEntry]) -> None:
    """The transcript hook: one delivery row per event and enabled destination that wants it,
    bulk-inserted in the caller's transaction; each sent by a task once the change commits."""
    typed = [(entry, kind) for entry in entries if (kind := event_type_of(entry))]
    if not typed:
        return  # most entries (output, queued, dispatched) are no event: no query for them
    by_tenant: dict[Any, list[tuple[TranscriptEntry, str]]] = {}
    for entry, kind in typed:
        by_tenant.setdefault(entry.tenant_id, []).append((entry, kind))
    created: list[int] = []
    for tenant_id, items in by_tenant.items():
        with tenancy.bind(tenant_id):
            destinations = list(WebhookEndpoint.objects.filter(enabled=True).only("pk", "events"))
            wanted = [(e, k) for e, k in items if any(k in d.events for d in destinations)]
            if not wanted:
                continue
            sessions = {
                row["pk"]: row
                for row in SupportSession.objects.filter(pk__in={e.session_id for e, _ in wanted}).values(
                    "pk", "reason", "endpoint_id", "endpoint__hostname"
                )
            }
            rows = []
            for entry, kind in wanted:
                event_id = uuid.uuid4()
                payload = envelope(
                    event_id=event_id,
                    event_type=kind,
                    tenant_id=tenant_id,
                    data=_data(entry, sessions[entry.session_id]),
                    at=entry.at,
                )
                rows += [
                    WebhookDelivery(
                        tenant_id=tenant_id, endpoint_id=d.pk, event_id=event_id, event_type=kind, payload=payload
                    )
                    for d in destinations
                    if kind in d.events
                ]
            # Keys come back from the insert (PostgreSQL, SQLite >= 3.35); a row without one is sent by the sweep.
            created += [row.pk for row in WebhookDelivery.objects.bulk_create(rows) if row.pk]
    if created:
        transaction.on_commit(lambda: deliveries_enqueue(created))
