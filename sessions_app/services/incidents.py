"""Incidents: several sessions on one outage, grouped by a team lead, then documented.

Services (the only write path) take the acting user and keyword-only arguments;
adding or removing a session writes the change and the session's transcript entry in
one transaction. Selectors build the merged timeline: every entry of every session of
the incident in time order, attributed to its technician and endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from caisey.errors import Rejected
from caisey.state_machine import IllegalTransition, TransitionRace, transition
from endpoints.models import ClientGroup
from endpoints.services import actor_label
from sessions_app.models import (
    INCIDENT_TRANSITIONS,
    Incident,
    IncidentSession,
    IncidentStatus,
    SupportSession,
)
from sessions_app.services.review import ReviewedEntry, reviewed_entries
from sessions_app.services.transcript import transcript_append


class IncidentError(Rejected):
    """A request that cannot be honoured; the message is for the technician."""


def _require_operator(actor, tenant_id) -> None:
    membership = getattr(actor, "membership", None)
    if membership is None or membership.tenant_id != tenant_id or not membership.can_operate:
        raise PermissionDenied("only the tenant's technicians and admins can do this")


def _locked(incident: Incident) -> Incident:
    return Incident.all_tenants.select_for_update().get(pk=incident.pk)


def _require_changeable(incident: Incident) -> None:
    if incident.status == IncidentStatus.CLOSED:
        raise IncidentError("this incident is closed; its record is final")


# --- services --------------------------------------------------------------------------------------


@transaction.atomic
def incident_create(*, actor, tenant_id, title: str, client_group: ClientGroup | None = None) -> Incident:
    _require_operator(actor, tenant_id)
    title = title.strip()
    if not title:
        raise IncidentError("an incident needs a title")
    if len(title) > 200:
        raise IncidentError("the title is limited to 200 characters")
    if client_group is not None and client_group.tenant_id != tenant_id:
        raise PermissionDenied("client group of another tenant")
    return Incident.all_tenants.create(
        tenant_id=tenant_id,
        title=title,
        client_group=client_group,
        created_by=actor,
        status_changed_by=actor_label(actor),
    )


@transaction.atomic
def incident_add_session(*, actor, incident: Incident, session: SupportSession) -> IncidentSession:
    """Count a session as part of the incident; the session's record says so."""
    _require_operator(actor, incident.tenant_id)
    if session.tenant_id != incident.tenant_id:
        raise PermissionDenied("session of another tenant")
    incident = _locked(incident)
    _require_changeable(incident)
    session = SupportSession.all_tenants.select_related("endpoint").get(pk=session.pk)
    if incident.client_group_id and session.endpoint.client_group_id != incident.client_group_id:
        # The incident's record is shared with its client: another client's machine has no place in it.
        raise IncidentError(f"{session.endpoint.hostname} belongs to another client than this incident's")
    if IncidentSession.all_tenants.filter(incident=incident, session=session).exists():
        raise IncidentError("this session is already part of the incident")
    try:
        with transaction.atomic():
            membership = IncidentSession.all_tenants.create(
                tenant_id=incident.tenant_id, incident=incident, session=session, added_by=actor
            )
    except IntegrityError:
        raise IncidentError("this session is already part of the incident") from None
    transcript_append(
        session=session,
        kind="session.added_to_incident",
        actor=actor_label(actor),
        data={"incident": str(incident.pk), "title": incident.title},
    )
    return membership


@transaction.atomic
def incident_remove_session(*, actor, incident: Incident, session: SupportSession) -> None:
    _require_operator(actor, incident.tenant_id)
    incident = _locked(incident)
    _require_changeable(incident)
    removed, _ = IncidentSession.all_tenants.filter(
        tenant_id=incident.tenant_id, incident=incident, session_id=session.pk
    ).delete()
    if not removed:
        raise IncidentError("this session is not part of the incident")
    transcript_append(
        session=session,
        kind="session.removed_from_incident",
        actor=actor_label(actor),
        data={"incident": str(incident.pk), "title": incident.title},
    )


@transaction.atomic
def incident_set_status(*, actor, incident: Incident, status: str) -> Incident:
    """open → resolved → closed (resolved may be reopened); closed is final."""
    _require_operator(actor, incident.tenant_id)
    if status not in IncidentStatus.values:
        raise IncidentError(f"unknown status {status!r}")
    incident = _locked(incident)
    now = timezone.now()
    updates: dict = {"status_changed_by": actor_label(actor)}
    if status == IncidentStatus.RESOLVED:
        updates["resolved_at"] = now
    elif status == IncidentStatus.OPEN:
        updates["resolved_at"] = None
    elif status == IncidentStatus.CLOSED:
        updates["closed_at"] = now
        if incident.resolved_at is None:
            updates["resolved_at"] = now
    try:
        transition(incident, to=status, table=INCIDENT_TRANSITIONS, updates=updates)
    except IllegalTransition:
        raise IncidentError(
            f"an incident that is {incident.get_status_display().lower()} cannot become "
            f"{IncidentStatus(status).label.lower()}"
        ) from None
    except TransitionRace:
        raise IncidentError("someone else changed the incident's status just now; reload") from None
    return incident


@transaction.atomic
def incident_write_summary(*, actor, incident: Incident, summary: str) -> Incident:
    _require_operator(actor, incident.tenant_id)
    summary = summary.strip()
    if len(summary) > 50_000:
        raise IncidentError("the summary is limited to 50,000 characters")
    incident = _locked(incident)
    _require_changeable(incident)
    now = timezone.now()
    Incident.all_tenants.filter(pk=incident.pk).update(summary=summary, summary_by=actor_label(actor), summary_at=now)
    incident.summary, incident.summary_by, incident.summary_at = summary, actor_label(actor), now
    return incident


# --- selectors -------------------------------------------------------------------------------------


def incident_list(*, status: str = "") -> QuerySet[Incident]:
    qs = Incident.objects.select_related("client_group", "created_by")
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at")


def incident_get(*, incident_id) -> Incident:
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
            cells = [None] * len(self.sessions)
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
