"""Webhook events: what a transcript entry means to the outside, and the versioned envelope.

Every change in a session writes a transcript entry in the change's transaction; sessions_app
calls ``events_from_transcript`` there (``sessions_app.hooks``), so an event's delivery rows
commit or roll back with the change itself (no event for a change that did not happen, no change
without its event). Changes that are no session's entry reach the same outbox the same way, inside
their transaction: security events through ``caisey.audit_hooks`` (``events_from_audit``), a bulk
run finished, a share link viewed and an endpoint's connectivity outside sessions through
``caisey.event_hooks`` (``events_from_outside``). The envelope (docs/integrations.md, version 1)::

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
from caisey.audit_hooks import AuditEvent
from caisey.event_hooks import OutsideEvent
from endpoints.selectors import tenant_ticket_template, ticket_link
from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.tasks import deliveries_enqueue
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import IncidentSession, SessionStatus, SupportSession, TranscriptEntry

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
    "endpoint.degraded": "The path to an endpoint became degraded",
    "endpoint.offline": "An endpoint went offline",
    "endpoint.back": "An endpoint is reachable again",
    "bulk_run.finished": "Every action of a bulk run ended",
    "share_link.viewed": "A client opened a share link (the page or its PDF)",
    "security.event": "A security event: sign-ins and their failures, lockouts, second factors, "
    "single sign-on, API tokens, members, policies",
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


def _ticket(template: str, ticket: str) -> dict | None:
    return ticket_link(template, ticket) if ticket else None


def _session_refs(tenant_id: Any, session_ids: set) -> dict[Any, dict]:
    """Each session's part of an event: reason, ticket reference and link, and the incidents it
    is in with theirs (docs/integrations.md, tickets: webhooks carry them). Two queries."""
    template = tenant_ticket_template(tenant_id=tenant_id)
    refs: dict[Any, dict[str, Any]] = {}
    for row in SupportSession.objects.filter(pk__in=session_ids).values(
        "pk", "reason", "ticket", "endpoint_id", "endpoint__hostname"
    ):
        refs[row["pk"]] = {**row, "incidents": []}
    for session_id, incident_id, title, ticket in IncidentSession.objects.filter(
        session_id__in=session_ids
    ).values_list("session_id", "incident_id", "incident__title", "incident__ticket"):
        refs[session_id]["incidents"].append(
            {"id": str(incident_id), "title": title, "ticket": _ticket(template, ticket)}
        )
    for ref in refs.values():
        ref["ticket"] = _ticket(template, ref["ticket"])
    return refs


def _data(entry: TranscriptEntry, session: Mapping[str, Any]) -> dict:
    detail = {k: v for k, v in (entry.data or {}).items() if k not in _DROPPED}
    return {
        "session": {
            "id": str(entry.session_id),
            "reason": session["reason"],
            "ticket": session["ticket"],
            "incidents": session["incidents"],
        },
        "endpoint": {"id": str(session["endpoint_id"]), "hostname": session["endpoint__hostname"]},
        "action": str(entry.action_id) if entry.action_id else None,
        "transcript": {"index": entry.index, "kind": entry.kind, "actor": entry.actor},
        "detail": detail,
    }


def _destinations() -> list[WebhookEndpoint]:
    return list(WebhookEndpoint.objects.filter(enabled=True).only("pk", "events"))


def _write(tenant_id: Any, destinations: list[WebhookEndpoint], events: list[tuple[str, dict, Any]]) -> list[int]:
    """One delivery row per (type, data, at) event and destination that wants it, bulk-inserted in
    the caller's transaction (the tenant bound). Returns the new rows' ids."""
    rows = []
    for kind, data, at in events:
        event_id = uuid.uuid4()
        payload = envelope(event_id=event_id, event_type=kind, tenant_id=tenant_id, data=data, at=at)
        rows += [
            WebhookDelivery(tenant_id=tenant_id, endpoint_id=d.pk, event_id=event_id, event_type=kind, payload=payload)
            for d in destinations
            if kind in d.events
        ]
    # Keys come back from the insert (PostgreSQL, SQLite >= 3.35); a row without one is sent by the sweep.
    return [row.pk for row in WebhookDelivery.objects.bulk_create(rows) if row.pk]


def _enqueue_on_commit(created: list[int]) -> None:
    if created:
        transaction.on_commit(lambda: deliveries_enqueue(created))


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
            destinations = _destinations()
            wanted = [(e, k) for e, k in items if any(k in d.events for d in destinations)]
            if not wanted:
                continue
            sessions = _session_refs(tenant_id, {e.session_id for e, _ in wanted})
            created += _write(tenant_id, destinations, [(k, _data(e, sessions[e.session_id]), e.at) for e, k in wanted])
    _enqueue_on_commit(created)


SECURITY_EVENT = "security.event"


def events_from_audit(events: Sequence[AuditEvent]) -> None:
    """The audit hook (``caisey.audit_hooks``), for its security events: each is a
    ``security.event`` (``data.kind`` says which), written in the security event's transaction.
    Transcript entries reach webhooks through ``events_from_transcript`` instead."""
    security = [e for e in events if e.category == "security"]
    created: list[int] = []
    for event in security:
        with tenancy.bind(event.tenant_id):
            destinations = [d for d in _destinations() if SECURITY_EVENT in d.events]
            if not destinations:
                continue
            data = {"kind": event.kind, "actor": event.actor, "audit_event_id": str(event.event_id), **event.data}
            created += _write(event.tenant_id, destinations, [(SECURITY_EVENT, data, event.at)])
    _enqueue_on_commit(created)


_ENDPOINT_TYPES = ("endpoint.degraded", "endpoint.offline", "endpoint.back")


def events_from_outside(events: Sequence[OutsideEvent]) -> None:
    """The ``caisey.event_hooks`` listener: bulk runs finished, share links viewed, and connectivity
    changes of endpoints. An endpoint in an open session is left out here: its session's record
    tells the change (a ``bridge.connectivity`` entry, ``events_from_transcript``), once."""
    created: list[int] = []
    for event in events:
        if event.type not in EVENT_TYPES:
            continue
        with tenancy.bind(event.tenant_id):
            destinations = [d for d in _destinations() if event.type in d.events]
            if not destinations:
                continue
            if (
                event.type in _ENDPOINT_TYPES
                and event.endpoint_id is not None
                and SupportSession.objects.filter(endpoint_id=event.endpoint_id, status=SessionStatus.OPEN).exists()
            ):
                continue
            created += _write(event.tenant_id, destinations, [(event.type, event.data, event.at)])
    _enqueue_on_commit(created)
