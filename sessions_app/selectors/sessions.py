"""Reads for sessions and their records. Tenant-scoped through the default managers.

Console pages get models or querysets (templates walk them); the API gets plain data
(``*_data`` functions: dicts keyed as its response shapes), so its serializers read no
model and no attribute hung on one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Count, QuerySet

from bridge import health
from endpoints.models import Endpoint
from endpoints.selectors import ticket_link
from sessions_app.kinds import TranscriptKind
from sessions_app.models import SessionStatus, SupportSession, TranscriptEntry
from sessions_app.selectors.actions import action_data, session_actions_list


def session_list(*, status: str = "", endpoint_id: Any = None, opened_by: Any = None) -> QuerySet[SupportSession]:
    qs = SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by", "tenant")
    if status:
        qs = qs.filter(status=status)
    if endpoint_id:
        qs = qs.filter(endpoint_id=endpoint_id)
    if opened_by is not None:
        qs = qs.filter(opened_by=opened_by)
    return qs.annotate(action_count=Count("actions")).order_by("-opened_at")


def session_get(*, session_id: Any) -> SupportSession:
    return SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by", "tenant").get(
        pk=session_id
    )


def session_transcript(*, session: SupportSession) -> QuerySet[TranscriptEntry]:
    return TranscriptEntry.objects.filter(session=session).order_by("index")


def open_sessions_for_endpoint(*, endpoint_id: Any) -> QuerySet[SupportSession]:
    return session_list(status=SessionStatus.OPEN, endpoint_id=endpoint_id)


# --- plain data for the API -----------------------------------------------------------------------


def client_group_ref(endpoint: Endpoint) -> dict[str, Any]:
    group = endpoint.client_group
    return {"id": group.pk, "name": group.name, "slug": group.slug}


def endpoint_ref(endpoint: Endpoint) -> dict[str, Any]:
    return {"id": endpoint.pk, "hostname": endpoint.hostname, "client_group": client_group_ref(endpoint)}


def endpoint_overview(endpoints: Iterable[Endpoint]) -> list[dict[str, Any]]:
    """Endpoints with their connectivity now and bridge health figures (the API's endpoint shape)."""
    endpoints = list(endpoints)
    figures = health.health_for([e.pk for e in endpoints])
    connectivity = {e.pk: health.connectivity_of(e, figures[e.pk]) for e in endpoints}
    return [
        {
            **endpoint_ref(e),
            "tags": e.tag_list,
            "status": e.status,
            "presence": connectivity[e.pk].state.value,
            "presence_reason": connectivity[e.pk].reason,
            "presence_since": connectivity[e.pk].since,
            "last_seen_at": e.last_seen_at,
            "connected_at": e.connected_at,
            "disconnected_at": e.disconnected_at,
            "mode": e.mode,
            "heartbeat_interval": e.heartbeat_interval,
            "agent_version": e.agent_version,
            "simulated": e.simulated,
            "machine_context": e.machine_context,
            "context_updated_at": e.context_updated_at,
            "enrolled_at": e.enrolled_at,
            "health": figures[e.pk].as_dict(),
        }
        for e in endpoints
    ]


def endpoint_detail_data(*, endpoint: Endpoint) -> dict[str, Any]:
    """One endpoint (API shape) with its open sessions."""
    (data,) = endpoint_overview([endpoint])
    data["open_sessions"] = [
        {"id": s.pk, "opened_by": s.opened_by.username, "opened_at": s.opened_at, "reason": s.reason}
        for s in open_sessions_for_endpoint(endpoint_id=endpoint.pk)
    ]
    return data


def session_data(session: SupportSession) -> dict[str, Any]:
    """A session (API shape); ``action_count`` when the row came from ``session_list``."""
    data = {
        "id": session.pk,
        "endpoint": endpoint_ref(session.endpoint),
        "opened_by": session.opened_by.username,
        "reason": session.reason,
        # The tenant comes with the row (session_list, session_get select it): no query per row.
        "ticket": ticket_link(session.tenant.ticket_url_template, session.ticket),
        "status": session.status,
        "status_changed_by": session.status_changed_by,
        "opened_at": session.opened_at,
        "opened_offline": session.opened_offline,
        "closed_at": session.closed_at,
        "close_reason": session.close_reason,
        "last_activity_at": session.last_activity_at,
        "follow_up_at": session.follow_up_at,
        "follow_up_note": session.follow_up_note,
    }
    if hasattr(session, "action_count"):
        data["action_count"] = session.action_count
    return data


def session_detail(*, session_id: Any) -> dict[str, Any]:
    """A session with its actions (API shape)."""
    session = session_get(session_id=session_id)
    return {**session_data(session), "actions": [action_data(a) for a in session_actions_list(session=session)]}


def transcript_entry_data(entry: TranscriptEntry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "kind": entry.kind,
        "actor": entry.actor,
        "at": entry.at,
        "action": entry.action_id,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def session_last_note(*, session: SupportSession) -> dict[str, Any]:
    """The session's latest note (what adding a note answers)."""
    entry = TranscriptEntry.objects.filter(session=session, kind=TranscriptKind.NOTE).order_by("-index").first()
    if entry is None:
        raise TranscriptEntry.DoesNotExist("the session has no note")
    return {"index": entry.index, "actor": entry.actor, "at": entry.at, "text": entry.data["text"]}
