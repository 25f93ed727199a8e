"""The write path for support sessions: open, close, notes, follow-ups, and the session sweeps.

Every function writes the change and its transcript entry in one transaction, and tells
console pages only after commit. A service acting for a technician checks and binds the
technician's tenant (``endpoints.access.acting_for``); sweeps cross tenants by name
(``tenancy.system()``) and bind each row's tenant for its write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from bridge import notify
from bridge.services import bridge_conditions, endpoint_set_mode
from caisey import tenancy
from caisey.actors import Actor, Party, actor_label, actor_person
from caisey.errors import Forbidden, Rejected
from caisey.state_machine import transition_if
from caisey.transactions import retrying_atomic
from endpoints.access import acting_for
from endpoints.models import AgentMode, Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of
from endpoints.selectors import approval_policy_for
from endpoints.tickets import ticket_clean
from sessions_app.kinds import TranscriptKind as K
from sessions_app.limits import NOTE_MAX_CHARS, REASON_MAX_CHARS, configured_duration
from sessions_app.models import SESSION_TRANSITIONS, Action, ActionStatus, SessionStatus, SupportSession
from sessions_app.services import prompting
from sessions_app.services.transcript import transcript_append


class SessionError(Rejected):
    """A request that cannot be honoured; the message is for the technician."""


def session_targets_fresh(*, endpoints: list[Endpoint], tenant_id: Any) -> dict[Any, Endpoint]:
    """The endpoints a bulk run (a diagnostic's or a runbook's) opens sessions on, checked and read
    fresh (the caller's copies may be stale), by primary key: all of ``tenant_id``, all found, none
    revoked. In the tenant's scope (``acting_for``)."""
    if any(e.tenant_id != tenant_id for e in endpoints):
        raise Forbidden("endpoints of another tenant")
    fresh = {e.pk: e for e in Endpoint.objects.filter(pk__in=[e.pk for e in endpoints])}
    if len(fresh) != len({e.pk for e in endpoints}):
        raise SessionError("an endpoint of this run was not found")
    if any(e.status != EndpointStatus.ENROLLED for e in fresh.values()):
        raise SessionError("this endpoint was revoked; it cannot be worked on")
    return fresh


def session_event(session: SupportSession, event: str, payload: dict[str, Any]) -> None:
    """Tell the session's console pages (after commit)."""
    notify.console_event(
        tenant_id=session.tenant_id,
        event=event,
        payload={"session_id": str(session.pk), **payload},
        topics={"session": session.pk},
        tenant_wide=False,
    )


def session_touch(*, session_id: Any) -> None:
    """Something happened in the session: it is not idle."""
    SupportSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now())


@retrying_atomic()
def session_open(
    *,
    actor: Actor,
    endpoint: Endpoint,
    reason: str = "",
    conditions: dict[str, Any] | None = None,
    wake: bool = True,
    ticket: str = "",
) -> SupportSession:
    """Open a session (``ticket``: the PSA ticket it belongs to, validated by
    ``endpoints.tickets.ticket_clean``); wakes the endpoint unless ``wake`` is off (work that can wait for its lazy
    check-ins, e.g. slow diagnostics queued with WakeChoice.WAIT). Offline endpoints open
    read-only (queue, notes, follow-up). ``conditions``: the bridge conditions, when the caller
    read them for many endpoints at once."""
    ticket = ticket_clean(ticket)
    with acting_for(actor, endpoint.tenant_id):
        endpoint.refresh_from_db()
        if endpoint.status != EndpointStatus.ENROLLED:
            raise SessionError("this endpoint was revoked; it cannot be worked on")
        offline = presence_of(endpoint) == Presence.OFFLINE
        conditions = conditions or bridge_conditions(endpoint=endpoint)
        session = SupportSession.objects.create(
            tenant_id=endpoint.tenant_id,
            endpoint=endpoint,
            opened_by=actor_person(actor, doing="open a session"),
            reason=reason[:REASON_MAX_CHARS],
            ticket=ticket,
            opened_offline=offline,
            connectivity=conditions["connectivity"],
        )
        transcript_append(
            session=session,
            kind=K.SESSION_OPENED,
            actor=actor_label(actor),
            data={
                "reason": session.reason,
                **({"ticket": ticket} if ticket else {}),
                "endpoint": endpoint.hostname,
                "offline": offline,
                "bridge": conditions,
                "machine_context": endpoint.machine_context,
                "wake": wake,
            },
        )
        if wake:
            endpoint_set_mode(endpoint=endpoint, mode=AgentMode.ACTIVE, reason="session opened")
        return session


@retrying_atomic()
def session_set_ticket(*, actor: Actor, session: SupportSession, ticket: str) -> SupportSession:
    """Set, change or clear (empty) the session's ticket reference; the transcript records the
    change (from, to, who). Allowed on closed sessions too: the ticket is often known only later.
    Setting the same reference again writes nothing."""
    ticket = ticket_clean(ticket)
    with acting_for(actor, session.tenant_id):
        session = SupportSession.objects.select_for_update().get(pk=session.pk)
        if session.ticket == ticket:
            return session
        previous = session.ticket
        SupportSession.objects.filter(pk=session.pk).update(ticket=ticket)
        session.ticket = ticket
        transcript_append(
            session=session,
            kind=K.SESSION_TICKET_SET,
            actor=actor_label(actor),
            data={"ticket": ticket, "previous": previous},
        )
        session_event(session, "session.ticket", {"ticket": ticket})
        return session


@retrying_atomic()
def session_close(*, actor: Actor, session: SupportSession, reason: str = "") -> None:
    with acting_for(actor, session.tenant_id):
        session = SupportSession.objects.select_for_update().get(pk=session.pk)
        if session.status != SessionStatus.OPEN:
            raise SessionError("the session is already closed")
        session_end(session=session, actor=actor, reason=reason)


def session_end(*, session: SupportSession, actor: Actor, reason: str, synthetic: bool = False) -> bool:
    """How every session closes (by its technician, a bulk run, the abandoned sweep): the
    transition, the closing entry, the live event, and the endpoint rests if nothing else is open
    on it. False (nothing written) when the session moved meanwhile. Runs in the caller's
    transaction, with the session's tenant bound."""
    by = actor_label(actor)
    if not transition_if(
        session,
        to=SessionStatus.CLOSED,
        table=SESSION_TRANSITIONS,
        updates={"closed_at": timezone.now(), "close_reason": reason[:REASON_MAX_CHARS], "status_changed_by": by},
    ):
        return False
    transcript_append(
        session=session,
        kind=K.SESSION_CLOSED,
        actor=by,
        data={"reason": reason, **({"synthetic": True} if synthetic else {})},
    )
    session_event(session, "session.closed", {"reason": reason})
    endpoint_rest_if_idle(endpoint_id=session.endpoint_id)
    return True


@retrying_atomic()
def session_add_note(*, actor: Actor, session: SupportSession, text: str) -> None:
    with acting_for(actor, session.tenant_id):
        text = text.strip()
        if not text:
            raise SessionError("a note needs some text")
        if len(text) > NOTE_MAX_CHARS:
            raise SessionError(f"a note is limited to {NOTE_MAX_CHARS:,} characters")
        entry = transcript_append(session=session, kind=K.NOTE, actor=actor_label(actor), data={"text": text})
        session_touch(session_id=session.pk)
        session_event(session, "session.note", {"index": entry.index, "text": text, "actor": entry.actor})


@retrying_atomic()
def follow_up_request(*, actor: Actor, session: SupportSession, at: datetime, note: str = "") -> None:
    """Ask the end user to approve a follow-up session at a later time."""
    with acting_for(actor, session.tenant_id):
        if at <= timezone.now():
            raise SessionError("a follow-up must be in the future")
        policy = approval_policy_for(endpoint=session.endpoint)
        prompting.prompt_issue(
            actor=actor,
            session=session,
            follow_up_at=at,
            title=prompting.prompt_title(
                actor=actor, session=session, what=f"a follow-up session at {at:%Y-%m-%d %H:%M}"
            ),
            detail=note or "A technician would like to continue this support session later.",
            deadline_s=max(policy.response_deadline_s, 3600),
            allow_escalation=policy.allow_escalation,
        )


def endpoint_rest_if_idle(*, endpoint_id: Any) -> bool:
    """Return an endpoint to lazy when no open session remains on it (the endpoint's tenant bound)."""
    if SupportSession.objects.filter(endpoint_id=endpoint_id, status=SessionStatus.OPEN).exists():
        return False
    endpoint = Endpoint.objects.get(pk=endpoint_id)
    return endpoint_set_mode(endpoint=endpoint, mode=AgentMode.LAZY, reason="no open session")


# --- sweeps (every tenant, by name) -------------------------------------------------------------


def idle_sessions_sweep() -> int:
    """Let endpoints rest when their open sessions have been idle past the timeout."""
    cutoff = timezone.now() - configured_duration("LAZY_AFTER_IDLE_S")
    rested = 0
    with tenancy.system():
        active = list(Endpoint.objects.filter(mode=AgentMode.ACTIVE).values_list("pk", "tenant_id"))
        for endpoint_id, tenant_id in active:
            busy = SupportSession.objects.filter(
                endpoint_id=endpoint_id, status=SessionStatus.OPEN, last_activity_at__gte=cutoff
            ).exists()
            running = Action.objects.filter(
                endpoint_id=endpoint_id,
                status__in=[ActionStatus.QUEUED, ActionStatus.DISPATCHED, ActionStatus.RUNNING],
            ).exists()
            if not busy and not running:
                with transaction.atomic(), tenancy.bind(tenant_id):
                    rested += endpoint_set_mode(
                        endpoint=Endpoint.objects.get(pk=endpoint_id), mode=AgentMode.LAZY, reason="sessions idle"
                    )
    return rested


def abandoned_sessions_sweep() -> int:
    """Close sessions nobody works on any more (technician gone, endpoint gone, or idle too long)
    with a synthetic closing entry that says why."""
    cutoff = timezone.now() - configured_duration("SESSION_ABANDON_AFTER_S")
    closed = 0
    with tenancy.system():
        open_sessions = list(
            SupportSession.objects.filter(status=SessionStatus.OPEN).select_related("opened_by", "endpoint")
        )
        for session in open_sessions:
            if not session.opened_by.is_active:
                why = "the technician's account was deactivated"
            elif session.endpoint.status == EndpointStatus.REVOKED:
                why = "the endpoint was revoked"
            elif session.last_activity_at < cutoff:
                why = f"no activity since {session.last_activity_at:%Y-%m-%d %H:%M %Z}"
            else:
                continue
            with transaction.atomic(), tenancy.bind(session.tenant_id):
                closed += session_end(session=session, actor=Party.SYSTEM, reason=f"abandoned: {why}", synthetic=True)
    return closed
