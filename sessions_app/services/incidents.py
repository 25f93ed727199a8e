"""Incidents: several sessions on one outage, grouped by a team lead, then documented (the writes).

Services (the only write path) take the acting person and keyword-only arguments; each acts
for a technician through ``acting_for`` (operator check, then the incident's tenant bound).
Adding or removing a session writes the change and the session's transcript entry in one
transaction. The reads (lists, the merged timeline) are in sessions_app/selectors/incidents.py.
"""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction
from django.utils import timezone

from caisey.actors import Actor, actor_label, actor_user
from caisey.errors import Conflict, Forbidden, Rejected
from caisey.state_machine import IllegalTransition, TransitionRace, transition
from caisey.transactions import retrying_atomic
from endpoints.access import acting_for
from endpoints.models import ClientGroup
from endpoints.tickets import ticket_clean
from sessions_app.kinds import TranscriptKind
from sessions_app.models import (
    INCIDENT_TRANSITIONS,
    Incident,
    IncidentSession,
    IncidentStatus,
    SupportSession,
)
from sessions_app.services.transcript import transcript_append

#: Limits of the incident's texts; the console forms (sessions_app/forms/incidents.py) use the same.
TITLE_MAX_LENGTH = 200
SUMMARY_MAX_LENGTH = 50_000

# Transcript kinds written here.
ADDED_TO_INCIDENT = TranscriptKind.SESSION_ADDED_TO_INCIDENT
REMOVED_FROM_INCIDENT = TranscriptKind.SESSION_REMOVED_FROM_INCIDENT


class IncidentError(Rejected):
    """A request that cannot be honoured; the message is for the technician."""


class IncidentConflict(Conflict):
    """A status move the incident's state does not allow, or one that lost a race."""


def _locked(incident: Incident) -> Incident:
    return Incident.objects.select_for_update().get(pk=incident.pk)


def _require_changeable(incident: Incident) -> None:
    if incident.status == IncidentStatus.CLOSED:
        raise IncidentError("this incident is closed; its record is final")


@retrying_atomic()
def incident_create(
    *,
    actor: Actor,
    tenant_id: uuid.UUID | str,
    title: str,
    client_group: ClientGroup | None = None,
    ticket: str = "",
) -> Incident:
    ticket = ticket_clean(ticket)
    with acting_for(actor, tenant_id):
        creator = actor_user(actor)
        if creator is None:
            raise Forbidden("an incident is created by a technician")
        title = title.strip()
        if not title:
            raise IncidentError("an incident needs a title")
        if len(title) > TITLE_MAX_LENGTH:
            raise IncidentError(f"the title is limited to {TITLE_MAX_LENGTH} characters")
        if client_group is not None and str(client_group.tenant_id) != str(tenant_id):
            raise Forbidden("client group of another tenant")
        return Incident.objects.create(
            tenant_id=tenant_id,
            title=title,
            client_group=client_group,
            ticket=ticket,
            created_by=creator,
            status_changed_by=actor_label(actor),
        )


@retrying_atomic()
def incident_add_session(*, actor: Actor, incident: Incident, session: SupportSession) -> IncidentSession:
    """Count a session as part of the incident; the session's record says so."""
    with acting_for(actor, incident.tenant_id):
        adder = actor_user(actor)
        if adder is None:
            raise Forbidden("sessions are added to an incident by a technician")
        if session.tenant_id != incident.tenant_id:
            raise Forbidden("session of another tenant")
        incident = _locked(incident)
        _require_changeable(incident)
        session = SupportSession.objects.select_related("endpoint").get(pk=session.pk)
        if incident.client_group_id and session.endpoint.client_group_id != incident.client_group_id:
            # The incident's record is shared with its client: another client's machine has no place in it.
            raise IncidentError(f"{session.endpoint.hostname} belongs to another client than this incident's")
        if IncidentSession.objects.filter(incident=incident, session=session).exists():
            raise IncidentError("this session is already part of the incident")
        try:
            with transaction.atomic():
                membership = IncidentSession.objects.create(
                    tenant_id=incident.tenant_id, incident=incident, session=session, added_by=adder
                )
        except IntegrityError:
            raise IncidentError("this session is already part of the incident") from None
        transcript_append(
            session=session,
            kind=ADDED_TO_INCIDENT,
            actor=actor_label(actor),
            data={"incident": str(incident.pk), "title": incident.title},
        )
        return membership


@retrying_atomic()
def incident_remove_session(*, actor: Actor, incident: Incident, session: SupportSession) -> None:
    with acting_for(actor, incident.tenant_id):
        incident = _locked(incident)
        _require_changeable(incident)
        removed, _ = IncidentSession.objects.filter(incident=incident, session_id=session.pk).delete()
        if not removed:
            raise IncidentError("this session is not part of the incident")
        transcript_append(
            session=session,
            kind=REMOVED_FROM_INCIDENT,
            actor=actor_label(actor),
            data={"incident": str(incident.pk), "title": incident.title},
        )


@retrying_atomic()
def incident_set_status(*, actor: Actor, incident: Incident, status: str) -> Incident:
    """open → resolved → closed (resolved may be reopened); closed is final.

    An unknown status is rejected; a move the incident's state does not allow, or one that
    lost a race with another technician, is a conflict (``IncidentConflict``)."""
    with acting_for(actor, incident.tenant_id):
        if status not in IncidentStatus.values:
            raise IncidentError(f"unknown status {status!r}")
        incident = _locked(incident)
        now = timezone.now()
        updates: dict[str, object] = {"status_changed_by": actor_label(actor)}
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
        except IllegalTransition as exc:
            raise IncidentConflict(
                f"an incident that is {incident.get_status_display().lower()} cannot become "
                f"{IncidentStatus(status).label.lower()}"
            ) from exc
        except TransitionRace as exc:
            raise IncidentConflict("someone else changed the incident's status just now; reload") from exc
        return incident


@retrying_atomic()
def incident_set_ticket(*, actor: Actor, incident: Incident, ticket: str) -> Incident:
    """Set, change or clear (empty) the incident's ticket reference. Incidents have no transcript
    of their own: each of its sessions' transcripts records the change (``incident.ticket_set``),
    in this transaction (the incident's row is locked first, then each session's, as when a
    session is added). Setting the same reference again writes nothing. A closed incident's record
    is final, its ticket too."""
    ticket = ticket_clean(ticket)
    with acting_for(actor, incident.tenant_id):
        incident = _locked(incident)
        _require_changeable(incident)
        if incident.ticket == ticket:
            return incident
        previous = incident.ticket
        Incident.objects.filter(pk=incident.pk).update(ticket=ticket)
        incident.ticket = ticket
        members = SupportSession.objects.filter(incident_memberships__incident=incident).order_by("pk")
        for session in members:
            transcript_append(
                session=session,
                kind=TranscriptKind.INCIDENT_TICKET_SET,
                actor=actor_label(actor),
                data={"incident": str(incident.pk), "ticket": ticket, "previous": previous},
            )
        return incident


@retrying_atomic()
def incident_write_summary(*, actor: Actor, incident: Incident, summary: str) -> Incident:
    with acting_for(actor, incident.tenant_id):
        summary = summary.strip()
        if len(summary) > SUMMARY_MAX_LENGTH:
            raise IncidentError(f"the summary is limited to {SUMMARY_MAX_LENGTH:,} characters")
        incident = _locked(incident)
        _require_changeable(incident)
        now = timezone.now()
        Incident.objects.filter(pk=incident.pk).update(summary=summary, summary_by=actor_label(actor), summary_at=now)
        incident.summary, incident.summary_by, incident.summary_at = summary, actor_label(actor), now
        return incident
