"""The approval prompt ledger's primitives: issue a prompt, record a move, show or withdraw it.

This module sits below both ``actions`` (which issues a prompt when a policy gates an action
and cancels the prompts covering an action it cancels) and ``approvals`` (which applies what
the console, the bridge, the runtime and approvers report, with its consequences on the held
actions). It imports neither, so the two never import each other.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from bridge import notify, outbox
from bridge.models import OutboxMessage, OutboxStatus
from caisey.actors import Actor, Party, actor_label, actor_person
from caisey.errors import Rejected
from caisey.state_machine import IllegalTransition, TransitionRace, transition_if
from caisey_agent import protocol as p
from endpoints.models import Presence
from endpoints.presence import presence_of
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import (
    PROMPT_OPEN,
    PROMPT_TRANSITIONS,
    Action,
    Batch,
    Prompt,
    PromptParty,
    PromptState,
    PromptTransition,
    SupportSession,
)
from sessions_app.selectors.approvals import endpoint_away_since
from sessions_app.services import locks
from sessions_app.services.transcript import transcript_append

TITLE_MAX_CHARS = 200


class PromptError(Rejected):
    """A request about a prompt that cannot be honoured; the message is for the person asking."""


def prompt_record(prompt: Prompt, to: str, *, party: str, detail: str = "", **updates: Any) -> bool:
    """Move a prompt and record the move (history row, transcript entry, live event); False, with
    nothing written, when the move is not allowed from where it is now or lost a race. Reports
    arrive from several parties at once, so both are expected here. No consequences: see
    ``approvals.prompt_transition``."""
    current = prompt.state
    locks.session_lock(session_id=prompt.session_id, tenant_id=prompt.tenant_id)  # before the prompt's row
    try:
        moved = transition_if(
            prompt, to=to, table=PROMPT_TRANSITIONS, field="state", updates={"state_changed_by": party, **updates}
        )
    except IllegalTransition:
        return False
    if not moved:
        return False
    PromptTransition.objects.create(prompt=prompt, from_state=current, to_state=to, party=party, detail=detail[:500])
    transcript_append(
        session=prompt.session,
        kind=K.of_prompt_state(to),
        actor=party,
        action=prompt.action,
        data={"prompt": str(prompt.pk), "from": current, "detail": detail, "decided_by": prompt.decided_by or None},
    )
    prompt_announce(prompt)
    return True


def prompt_announce(prompt: Prompt) -> None:
    notify.console_event(
        tenant_id=prompt.tenant_id,
        event="prompt.state",
        tenant_wide=False,
        topics={"session": prompt.session_id},
        payload={
            "session_id": str(prompt.session_id),
            "prompt_id": str(prompt.pk),
            "state": prompt.state,
            "party": prompt.state_changed_by,
            "action_id": str(prompt.action_id) if prompt.action_id else None,
        },
    )


def prompt_stop_showing(prompt: Prompt) -> None:
    """A decided prompt is not shown again: its show message, if still being retried, is cancelled."""
    show = OutboxMessage.objects.filter(pk=prompt.outbox_id, status=OutboxStatus.QUEUED).first()
    if show is not None:
        try:
            outbox.outbox_cancel(actor=Party.BRIDGE, message=show)
        except (IllegalTransition, TransitionRace):
            pass  # acked or failed meanwhile: nothing left to stop


def prompt_withdraw(prompt: Prompt, *, reason: str) -> None:
    """Tell the runtime to take the prompt down; undelivered show messages are cancelled instead."""
    show = OutboxMessage.objects.filter(pk=prompt.outbox_id).first() if prompt.outbox_id else None
    if show is not None and show.status == OutboxStatus.QUEUED and show.attempts == 0:
        outbox.outbox_cancel(actor=Party.BRIDGE, message=show)
        return
    outbox.outbox_enqueue(
        endpoint=prompt.endpoint,
        body=p.PromptWithdraw(prompt_id=str(prompt.pk), reason=reason),
        ref_type="prompt.withdraw",
        ref_id=str(prompt.pk),
    )


def prompt_show(prompt: Prompt) -> None:
    """Queue the prompt for the endpoint's user (until its deadline)."""
    org = prompt.tenant.name if hasattr(prompt, "tenant") else ""
    message = outbox.outbox_enqueue(
        endpoint=prompt.endpoint,
        body=p.PromptShow(
            prompt_id=str(prompt.pk),
            title=prompt.title,
            detail=prompt.detail,
            requested_by=prompt.requested_by.get_full_name() or prompt.requested_by.get_username(),
            organisation=org,
            deadline=prompt.deadline_at.timestamp(),
        ),
        ref_type="prompt",
        ref_id=str(prompt.pk),
        expires_at=prompt.deadline_at,
        max_attempts=100_000,
    )
    Prompt.objects.filter(pk=prompt.pk).update(outbox_id=message.pk)
    prompt.outbox_id = message.pk


def prompt_issue(
    *,
    actor: Actor,
    session: SupportSession,
    title: str,
    detail: str,
    deadline_s: float,
    allow_escalation: bool,
    action: Action | None = None,
    batch: Batch | None = None,
    follow_up_at: datetime | None = None,
) -> Prompt:
    """Create a prompt and queue it for the endpoint's user; call inside the requesting
    transaction, with the session's tenant bound (the requesting service binds it)."""
    prompt = Prompt.objects.create(
        tenant_id=session.tenant_id,
        session=session,
        endpoint_id=session.endpoint_id,
        action=action,
        batch=batch,
        follow_up_at=follow_up_at,
        title=title[:TITLE_MAX_CHARS],
        detail=detail,
        requested_by=actor_person(actor, doing="ask for approval"),
        deadline_at=timezone.now() + timedelta(seconds=deadline_s),
        allow_escalation=allow_escalation,
    )
    transcript_append(
        session=session,
        kind=K.PROMPT_PENDING,
        actor=actor_label(actor),
        action=action,
        data={
            "prompt": str(prompt.pk),
            "title": prompt.title,
            "detail": detail,
            "deadline": prompt.deadline_at.isoformat(),
        },
    )
    prompt_show(prompt)
    prompt_announce(prompt)
    prompt_reach_check(prompt)
    return prompt


# --- prompts never spin: known-away endpoints are said so at once, not at the deadline ------------


def prompt_pending_since(prompt: Prompt) -> datetime:
    """When the prompt last became pending (issued, or resent)."""
    resent = PromptTransition.objects.filter(prompt=prompt, to_state=PromptState.PENDING).order_by("-at").first()
    return resent.at if resent else prompt.created_at


def prompt_unreachable_why(prompt: Prompt, *, now: datetime) -> str:
    """Why a pending prompt's endpoint is known not to be reachable now, or "" (still on its way).

    Known away: its presence is offline (a closed socket, or heartbeats missed), or its show was
    sent and not acknowledged within the outbox's ack timeout since the prompt became pending (a
    frozen agent keeps its socket open: the ack timeout says so ~10 s in, presence only after
    the missed beats and grace, ~30 s at the active cadence)."""
    endpoint = prompt.endpoint
    if presence_of(endpoint, now) == Presence.OFFLINE:
        since = endpoint_away_since(endpoint)
        if since is None:
            return "could not reach endpoint: it has never connected"
        return f"could not reach endpoint: offline since {timezone.localtime(since):%H:%M:%S}"
    ack_timeout = settings.CAISEY["OUTBOX_ACK_TIMEOUT_S"]
    # A (re)connecting agent is sent everything waiting with its hello: the wait counts from then.
    # Both bounds are on the rows at hand; only an old enough prompt costs the queries below
    # (measured on SQLite: a sweep of 500 fresh pending prompts took 403 ms querying each, 24 ms so).
    floor = max(filter(None, (prompt.created_at, endpoint.connected_at)))
    if not prompt.outbox_id or (now - floor).total_seconds() < ack_timeout:
        return ""
    show = OutboxMessage.objects.filter(pk=prompt.outbox_id, status=OutboxStatus.QUEUED).first()
    if show is None or show.attempts < 1:
        return ""
    waited = (now - max(floor, prompt_pending_since(prompt))).total_seconds()
    if waited >= ack_timeout:
        return f"could not reach endpoint: sent {show.attempts} time(s), no acknowledgement in {waited:.0f} s"
    return ""


def prompt_reach_check(prompt: Prompt, *, now: datetime | None = None) -> bool:
    """A pending prompt whose endpoint is known to be away: failed_to_deliver now (its show keeps
    waiting, so it still goes out if the endpoint returns before the deadline)."""
    if prompt.state != PromptState.PENDING:
        return False
    why = prompt_unreachable_why(prompt, now=now or timezone.now())
    return bool(why) and prompt_record(prompt, PromptState.FAILED_TO_DELIVER, party=PromptParty.BRIDGE, detail=why)


def _display_name(actor: Actor) -> str:
    if isinstance(actor, Party):
        return actor.value
    full_name = getattr(actor, "get_full_name", None)  # AbstractUser has one; AbstractBaseUser not
    return (full_name() if full_name else "") or actor.get_username()


def prompt_title(*, actor: Actor, session: SupportSession, what: str) -> str:
    return f"{_display_name(actor)} ({session.tenant.name}) asks to run: {what}"


def prompt_fresh(prompt: Prompt) -> Prompt:
    """The row as it is now, locked after its session (the caller's copy may be stale)."""
    locks.session_lock(session_id=prompt.session_id, tenant_id=prompt.tenant_id)
    return (
        Prompt.objects.select_for_update(of=("self",)).select_related("session", "endpoint", "tenant").get(pk=prompt.pk)
    )


def prompts_open_covering(*, action: Action) -> QuerySet[Prompt]:
    """The open prompts asking about ``action`` (for a batch, the one prompt covering every step),
    locked after their session."""
    locks.session_lock(session_id=action.session_id, tenant_id=action.tenant_id)
    scope = {"batch_id": action.batch_id} if action.batch_id else {"action_id": action.pk}
    return (
        Prompt.objects.select_for_update(of=("self",))
        .select_related("session", "endpoint", "tenant")
        .filter(state__in=PROMPT_OPEN, **scope)
    )
