"""Reading incidents: lists, one incident, its sessions, and the merged timeline.

The timeline is every entry of every session of the incident in time order, attributed to
its technician and endpoint, with review's redactions applied or marked
(sessions_app/selectors/review.py). The writes are in sessions_app/services/incidents.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db.models import QuerySet

from sessions_app.models import INCIDENT_TRANSITIONS, Incident, IncidentStatus, SupportSession
from sessions_app.selectors.review import ReviewedEntry, reviewed_entries


def incident_list(*, status: str = "") -> QuerySet[Incident]:
    qs = Incident.objects.select_related("client_group", "created_by")
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at")


def incident_get(*, incident_id: uuid.UUID | str) -> Incident:
    return Incident.objects.select_related("client_group", "created_by").get(pk=incident_id)


def incident_sessions(*, incident: Incident) -> list[SupportSession]:
    """The incident's sessions, oldest first (the order their columns appear side by side)."""
    return list(
        SupportSession.objects.filter(incident_memberships__incident=incident)
        .select_related("endpoint", "endpoint__client_group", "opened_by")
        .order_by("opened_at", "pk")
    )


def sessions_to_add(*, incident: Incident, limit: int = 50) -> list[SupportSession]:
    """Recent sessions that could join the incident (its client's, when it has one)."""
    qs = SupportSession.objects.select_related("endpoint", "opened_by").exclude(incident_memberships__incident=incident)
    if incident.client_group_id:
        qs = qs.filter(endpoint__client_group_id=incident.client_group_id)
    return list(qs.order_by("-opened_at")[:limit])


@dataclass
class TimelineFilters:
    technician: str = ""  # user id of the session's technician
    endpoint: str = ""  # endpoint id
    kind: str = ""  # an exact kind ("action.result") or a family ("action")

    @property
    def active(self) -> bool:
        return bool(self.technician or self.endpoint or self.kind)


def kind_matches(kind: str, wanted: str) -> bool:
    """``wanted`` is an exact transcript kind or a family (the part before the dot).

    Kinds are compared as strings: H-B's TranscriptKind is a StrEnum whose values are these
    strings, so filters keep working unchanged when callers pass its members."""
    return not wanted or kind == wanted or kind.startswith(wanted + ".")


@dataclass
class Timeline:
    items: list[ReviewedEntry]
    sessions: list[SupportSession]
    technicians: list[tuple[str, str]] = field(default_factory=list)  # (user id, username)
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (endpoint id, hostname)
    kinds: list[str] = field(default_factory=list)  # families then exact kinds present

    @property
    def columns(self) -> list[dict]:
        """Side by side: one column per session; each row is one entry, in its session's column."""
        position = {s.pk: i for i, s in enumerate(self.sessions)}
        rows = []
        for item in self.items:
            cells: list[ReviewedEntry | None] = [None] * len(self.sessions)
            cells[position[item.session.pk]] = item
            rows.append({"item": item, "cells": cells})
        return rows


def merged_timeline(
    *,
    sessions: list[SupportSession],
    filters: TimelineFilters | None = None,
    upto: dict[str, int] | None = None,
    for_client: bool = False,
) -> Timeline:
    """Every entry of the sessions ordered by time, then session (oldest first), then index."""
    filters = filters or TimelineFilters()
    order = {s.pk: i for i, s in enumerate(sessions)}
    items: list[ReviewedEntry] = []
    for session in sessions:
        limit = None if upto is None else upto.get(str(session.pk))
        if upto is not None and limit is None:
            continue
        items += reviewed_entries(session=session, upto=limit, for_client=for_client)
    items.sort(key=lambda e: (e.entry.at, order[e.session.pk], e.entry.index))

    technicians = sorted({(str(s.opened_by_id), s.opened_by.get_username()) for s in sessions}, key=lambda t: t[1])
    endpoints = sorted({(str(s.endpoint_id), s.endpoint.hostname) for s in sessions}, key=lambda t: t[1])
    present = {e.entry.kind for e in items}
    kinds = sorted({k.split(".")[0] for k in present if "." in k}) + sorted(present)

    shown = [
        e
        for e in items
        if (not filters.technician or str(e.session.opened_by_id) == filters.technician)
        and (not filters.endpoint or str(e.session.endpoint_id) == filters.endpoint)
        and kind_matches(e.entry.kind, filters.kind)
    ]
    return Timeline(items=shown, sessions=sessions, technicians=technicians, endpoints=endpoints, kinds=kinds)


def incident_timeline(*, incident: Incident, filters: TimelineFilters | None = None) -> Timeline:
    """The console's merged timeline: originals, with what review redacted marked."""
    return merged_timeline(sessions=incident_sessions(incident=incident), filters=filters)


def incident_next_statuses(*, incident: Incident) -> list[IncidentStatus]:
    """The statuses the incident may move to now, in the order the console offers them."""
    return [s for s in IncidentStatus if s in INCIDENT_TRANSITIONS[incident.status]]
