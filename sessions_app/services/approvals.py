"""Approval prompts: one state machine, three views (console, bridge, runtime), one truth.

The database is the ledger. Every change goes through ``prompt_transition``,
which checks the table, applies a conditional update, and records the party
that reported it. Who wins (DESIGN.md):
- the runtime, for the end user's own actions: acknowledged, approved, denied;
  a decision made before the deadline is honoured even when it arrives late;
- the bridge, for delivery: pending, delivered, failed_to_deliver; a runtime
  report that it holds a prompt is proof of delivery;
- the console, for cancelled and superseded: such a prompt never resolves
  later; a late decision for it is recorded as ignored and the runtime is told
  to withdraw it.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from bridge import notify, outbox
from bridge.models import OutboxMessage, OutboxStatus
from caisey import secrets
from caisey.errors import Rejected
from caisey.state_machine import IllegalTransition, TransitionRace, transition
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from endpoints.services import actor_label
from sessions_app.models import (
    PROMPT_ENDED,
    PROMPT_OPEN,
    PROMPT_TRANSITIONS,
    Action,
    ActionStatus,
    ApprovalLink,
    ApprovalLinkVisit,
    Prompt,
    PromptParty,
    PromptState,
    PromptTransition,
    SupportSession,
)
from sessions_app.services.transcript import transcript_append

log = logging.getLogger(__name__)
S = PromptState


class PromptError(Rejected):
    """A request about a prompt that cannot be honoured; the message is for the person asking."""


# --- the one transition function -------------------------------------------------------


def prompt_transition(prompt: Prompt, to: str, *, party: str, detail: str = "", **updates) -> bool:
    """Move a prompt; False when the move is not allowed from where it is now or lost a race."""
    current = prompt.state
    try:
        transition(
            prompt, to=to, table=PROMPT_TRANSITIONS, field="state", updates={"state_changed_by": party, **updates}
        )
    except (IllegalTransition, TransitionRace):
        prompt.refresh_from_db()
        return False
    PromptTransition.all_tenants.create(
        prompt=prompt, from_state=current, to_state=to, party=party, detail=detail[:500]
    )
    transcript_append(
        session=prompt.session,
        kind=f"prompt.{to}",
        actor=party,
        action=prompt.action,
        data={"prompt": str(prompt.pk), "from": current, "detail": detail, "decided_by": prompt.decided_by or None},
    )
    _announce(prompt)
    _consequences(prompt, to)
    return True


def _announce(prompt: Prompt) -> None:
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


def _gated_actions(prompt: Prompt):
    if prompt.batch_id:
        return Action.all_tenants.filter(batch_id=prompt.batch_id, status=ActionStatus.AWAITING_APPROVAL)
    if prompt.action_id:
        return Action.all_tenants.filter(pk=prompt.action_id, status=ActionStatus.AWAITING_APPROVAL)
    return Action.all_tenants.none()


def _consequences(prompt: Prompt, to: str) -> None:
    from sessions_app.services import actions as services

    if to in (S.APPROVED, S.DENIED):
        _stop_showing(prompt)
    if to == S.APPROVED:
        released = list(_gated_actions(prompt).order_by("batch_position"))
        for action in released:
            services.action_release(action=action, prompt=prompt)
        if prompt.follow_up_at:
            SupportSession.all_tenants.filter(pk=prompt.session_id).update(follow_up_at=prompt.follow_up_at)
            transcript_append(
                session=prompt.session,
                kind="session.follow_up_scheduled",
                actor=PromptParty.RUNTIME,
                data={"at": prompt.follow_up_at.isoformat(), "approved_prompt": str(prompt.pk)},
            )
    elif to in (S.DENIED, S.EXPIRED, S.CANCELLED):
        for action in _gated_actions(prompt):
            services.action_stop_unapproved(action=action, prompt_state=to)
    if to in (S.CANCELLED, S.SUPERSEDED, S.EXPIRED):
        _withdraw(prompt, reason=to)


def _stop_showing(prompt: Prompt) -> None:
    """A decided prompt is not shown again: its show message, if still being retried, is cancelled."""
    show = OutboxMessage.all_tenants.filter(pk=prompt.outbox_id, status=OutboxStatus.QUEUED).first()
    if show is not None:
        try:
            outbox.outbox_cancel(actor="bridge", message=show)
        except (IllegalTransition, TransitionRace):
            pass  # acked or failed meanwhile: nothing left to stop


def _withdraw(prompt: Prompt, *, reason: str) -> None:
    """Tell the runtime to take the prompt down; undelivered show messages are cancelled instead."""
    show = OutboxMessage.all_tenants.filter(pk=prompt.outbox_id).first() if prompt.outbox_id else None
    if show is not None and show.status == OutboxStatus.QUEUED and show.attempts == 0:
        outbox.outbox_cancel(actor="bridge", message=show)
        return
    outbox.outbox_enqueue(
        endpoint=prompt.endpoint,
        body=p.PromptWithdraw(prompt_id=str(prompt.pk), reason=reason),
        ref_type="prompt.withdraw",
        ref_id=str(prompt.pk),
    )


# --- issuing ------------------------------------------------------------------------------


def _show(prompt: Prompt) -> None:
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
    Prompt.all_tenants.filter(pk=prompt.pk).update(outbox_id=message.pk)
    prompt.outbox_id = message.pk


def prompt_issue(
    *,
    actor,
    session: SupportSession,
    title: str,
    detail: str,
    deadline_s: float,
    allow_escalation: bool,
    action: Action | None = None,
    batch=None,
    follow_up_at: datetime | None = None,
) -> Prompt:
    """Create a prompt and queue it for the endpoint's user; call inside the requesting transaction."""
    prompt = Prompt.all_tenants.create(
        tenant_id=session.tenant_id,
        session=session,
        endpoint_id=session.endpoint_id,
        action=action,
        batch=batch,
        follow_up_at=follow_up_at,
        title=title[:200],
        detail=detail,
        requested_by=actor,
        deadline_at=timezone.now() + timedelta(seconds=deadline_s),
        allow_escalation=allow_escalation,
    )
    transcript_append(
        session=session,
        kind="prompt.pending",
        actor=actor_label(actor),
        action=action,
        data={
            "prompt": str(prompt.pk),
            "title": prompt.title,
            "detail": detail,
            "deadline": prompt.deadline_at.isoformat(),
        },
    )
    _show(prompt)
    _announce(prompt)
    return prompt


def prompt_title(*, actor, session: SupportSession, what: str) -> str:
    who = actor.get_full_name() or actor.get_username()
    return f"{who} ({session.tenant.name}) asks to run: {what}"


# --- the console's transitions --------------------------------------------------------------


def _fresh(prompt: Prompt) -> Prompt:
    return Prompt.all_tenants.select_for_update().select_related("session", "endpoint", "tenant").get(pk=prompt.pk)


@transaction.atomic
def prompt_cancel(*, actor, prompt: Prompt) -> None:
    prompt = _fresh(prompt)
    if not prompt.is_open or not prompt_transition(
        prompt, S.CANCELLED, party=PromptParty.CONSOLE, detail=f"cancelled by {actor_label(actor)}"
    ):
        raise PromptError(f"the prompt is already {prompt.get_state_display().lower()}")


def prompt_cancel_covering(*, actor, action: Action) -> None:
    """The technician cancelled an action that was waiting for approval: the question it asked
    (for a batch, the one prompt covering every step) is withdrawn, and held steps never run."""
    scope = {"batch_id": action.batch_id} if action.batch_id else {"action_id": action.pk}
    for prompt in (
        Prompt.all_tenants.select_for_update()
        .select_related("session", "endpoint", "tenant")
        .filter(state__in=PROMPT_OPEN, **scope)
    ):
        prompt_transition(
            prompt, S.CANCELLED, party=PromptParty.CONSOLE, detail=f"its action was cancelled by {actor_label(actor)}"
        )


@transaction.atomic
def prompt_reissue(*, actor, prompt: Prompt) -> Prompt:
    """Cancel-and-reissue: the old prompt is superseded and the same request asked again."""
    prompt = _fresh(prompt)
    if not prompt.is_open:
        raise PromptError(f"a {prompt.get_state_display().lower()} prompt cannot be reissued; run the action again")
    deadline = max(60.0, (prompt.deadline_at - prompt.created_at).total_seconds())
    fresh = prompt_issue(
        actor=actor,
        session=prompt.session,
        title=prompt.title,
        detail=prompt.detail,
        deadline_s=deadline,
        allow_escalation=prompt.allow_escalation,
        action=prompt.action,
        batch=prompt.batch,
        follow_up_at=prompt.follow_up_at,
    )
    if not prompt_transition(
        prompt,
        S.SUPERSEDED,
        party=PromptParty.CONSOLE,
        detail=f"reissued as {fresh.pk} by {actor_label(actor)}",
        superseded_by=fresh,
    ):
        raise PromptError("the prompt changed meanwhile; look again")
    return fresh


@transaction.atomic
def prompt_resend(*, actor, prompt: Prompt) -> None:
    """After failed_to_deliver: queue the same prompt again with a fresh retry budget."""
    prompt = _fresh(prompt)
    if prompt.state != S.FAILED_TO_DELIVER:
        raise PromptError("only a prompt that could not be delivered can be resent")
    if prompt.deadline_at <= timezone.now():
        raise PromptError("the prompt's deadline has passed; reissue it instead")
    message = OutboxMessage.all_tenants.get(pk=prompt.outbox_id)
    outbox.outbox_resend(actor=actor, message=message)
    OutboxMessage.all_tenants.filter(pk=message.pk).update(expires_at=prompt.deadline_at)
    prompt_transition(prompt, S.PENDING, party=PromptParty.CONSOLE, detail=f"resent by {actor_label(actor)}")


# --- the bridge's view ------------------------------------------------------------------------


@transaction.atomic
def prompt_delivered(*, message: OutboxMessage) -> None:
    prompt = Prompt.all_tenants.select_related("session", "endpoint").filter(pk=message.ref_id).first()
    if prompt is not None and prompt.state in (S.PENDING, S.FAILED_TO_DELIVER):
        prompt_transition(
            prompt,
            S.DELIVERED,
            party=PromptParty.BRIDGE,
            delivered_at=timezone.now(),
            detail=f"acknowledged by the agent after {message.attempts} attempt(s)",
        )


@transaction.atomic
def prompt_undeliverable(*, message: OutboxMessage) -> None:
    prompt = Prompt.all_tenants.select_related("session", "endpoint").filter(pk=message.ref_id).first()
    if prompt is None or prompt.state != S.PENDING:
        return
    if prompt.deadline_at <= timezone.now():
        prompt_transition(
            prompt,
            S.EXPIRED,
            party=PromptParty.SYSTEM,
            detail=f"expired before the endpoint could be reached ({message.attempts} attempts)",
        )
    else:
        prompt_transition(
            prompt,
            S.FAILED_TO_DELIVER,
            party=PromptParty.BRIDGE,
            detail=f"could not reach the endpoint after {message.attempts} attempts: {message.last_error}",
        )


# --- the runtime's view -------------------------------------------------------------------------


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def _runtime_says(prompt: Prompt, state: str, decided_at: datetime | None, decided_by: str) -> None:
    """Apply what the runtime reports about one prompt, by the reconciliation rules."""
    if state in (S.APPROVED, S.DENIED):
        if prompt.state in (S.CANCELLED, S.SUPERSEDED):
            transcript_append(
                session=prompt.session,
                kind="prompt.late_decision_ignored",
                actor=PromptParty.RUNTIME,
                action=prompt.action,
                data={
                    "prompt": str(prompt.pk),
                    "decision": state,
                    "state": prompt.state,
                    "decided_at": decided_at.isoformat() if decided_at else None,
                },
            )
            _withdraw(prompt, reason=prompt.state)
            return
        if prompt.state == state:
            return  # already applied (a replay)
        if prompt.state in (S.APPROVED, S.DENIED):
            # The runtime lost its state and asked again (a reinstall, a replayed show); the first
            # decision is the record, so the runtime is told to take its copy down.
            transcript_append(
                session=prompt.session,
                kind="prompt.late_decision_ignored",
                actor=PromptParty.RUNTIME,
                action=prompt.action,
                data={
                    "prompt": str(prompt.pk),
                    "decision": state,
                    "state": prompt.state,
                    "why": "the prompt was already decided",
                },
            )
            _withdraw(prompt, reason=prompt.state)
            return
        if prompt.state == S.EXPIRED and not (decided_at and decided_at <= prompt.deadline_at):
            transcript_append(
                session=prompt.session,
                kind="prompt.late_decision_ignored",
                actor=PromptParty.RUNTIME,
                action=prompt.action,
                data={
                    "prompt": str(prompt.pk),
                    "decision": state,
                    "state": prompt.state,
                    "why": "decided after the deadline",
                },
            )
            return
        prompt_transition(
            prompt,
            state,
            party=PromptParty.RUNTIME,
            decided_at=decided_at or timezone.now(),
            decided_by=decided_by[:200],
            detail=f"{state} on the endpoint by {decided_by or 'the user'}",
        )
        return
    if state in (S.DELIVERED, S.ACKNOWLEDGED):
        if prompt.state in PROMPT_ENDED:
            _withdraw(prompt, reason=prompt.state)
            return
        if prompt.state in (S.PENDING, S.FAILED_TO_DELIVER):
            prompt_transition(
                prompt,
                S.DELIVERED,
                party=PromptParty.RUNTIME,
                delivered_at=timezone.now(),
                detail="the runtime reports holding it",
            )
        if state == S.ACKNOWLEDGED and prompt.state == S.DELIVERED:
            prompt_transition(
                prompt, S.ACKNOWLEDGED, party=PromptParty.RUNTIME, seen_at=timezone.now(), detail="seen by the user"
            )


def _own_prompt(endpoint: Endpoint, prompt_id: str) -> Prompt | None:
    try:
        return (
            Prompt.all_tenants.select_related("session", "endpoint", "tenant")
            .select_for_update()
            .get(pk=prompt_id, endpoint_id=endpoint.pk)
        )
    except (Prompt.DoesNotExist, ValueError, ValidationError):  # malformed ids are unknown prompts
        return None


@transaction.atomic
def prompt_runtime_update(*, endpoint: Endpoint, body: p.PromptUpdate) -> None:
    prompt = _own_prompt(endpoint, body.prompt_id)
    if prompt is not None and body.state in PromptState.values:
        _runtime_says(prompt, body.state, _ts(body.decided_at), body.decided_by)


@transaction.atomic
def prompt_runtime_report(*, endpoint: Endpoint, reports: list[p.PromptReport]) -> dict[str, int]:
    """Converge on hello and heartbeat: the runtime lists every prompt it holds."""
    held = set()
    for report in reports:
        prompt = _own_prompt(endpoint, report.prompt_id)
        if prompt is None:
            continue
        held.add(prompt.pk)
        if report.state in PromptState.values:
            _runtime_says(prompt, report.state, _ts(report.decided_at), "")
    replayed = 0
    # The server thinks these were delivered, yet the runtime does not hold them: replay.
    missing = (
        Prompt.all_tenants.select_related("session", "endpoint", "tenant", "requested_by")
        .filter(endpoint_id=endpoint.pk, state__in=[S.DELIVERED, S.ACKNOWLEDGED], deadline_at__gt=timezone.now())
        .exclude(pk__in=held)
    )
    for prompt in missing:
        waiting = OutboxMessage.all_tenants.filter(
            endpoint_id=endpoint.pk, ref_type="prompt", ref_id=str(prompt.pk), status=OutboxStatus.QUEUED
        ).exists()
        if not waiting:
            _show(prompt)
            transcript_append(
                session=prompt.session,
                kind="prompt.replayed",
                actor=PromptParty.BRIDGE,
                action=prompt.action,
                data={"prompt": str(prompt.pk), "why": "the runtime did not report holding it"},
            )
            replayed += 1
    return {"held": len(held), "replayed": replayed}


def endpoint_has_open_prompts(*, endpoint_id) -> bool:
    return Prompt.all_tenants.filter(endpoint_id=endpoint_id, state__in=PROMPT_OPEN).exists()


# --- deadlines -------------------------------------------------------------------------------------


def prompt_deadline_sweep() -> int:
    now = timezone.now()
    count = 0
    overdue = Prompt.all_tenants.filter(state__in=PROMPT_OPEN, deadline_at__lte=now).values_list("pk", flat=True)
    for prompt_id in overdue:
        with transaction.atomic():
            prompt = _fresh(Prompt(pk=prompt_id))
            if prompt.is_open and prompt.deadline_at <= now:
                why = {
                    S.PENDING: "expired before the endpoint received it",
                    S.FAILED_TO_DELIVER: "expired: the endpoint could not be reached",
                    S.DELIVERED: "expired unanswered: delivered, never seen",
                    S.ACKNOWLEDGED: "expired unanswered: seen, not decided",
                }[prompt.state]
                count += prompt_transition(prompt, S.EXPIRED, party=PromptParty.SYSTEM, detail=why)
    return count


# --- escalation to the client's designated approver --------------------------------------------


def _link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def prompt_escalate(*, actor, prompt: Prompt, base_url: str) -> ApprovalLink:
    """Send a one-time approval link to the client group's designated approver."""
    prompt = _fresh(prompt)
    if not prompt.is_open:
        raise PromptError(f"the prompt is already {prompt.get_state_display().lower()}")
    if not prompt.allow_escalation:
        raise PromptError("this client's policy does not allow escalating prompts")
    email = prompt.endpoint.client_group.approver_email
    if not email:
        raise PromptError("the client group has no designated approver; set one in the admin")
    token = secrets.new_secret("apl_")
    link = ApprovalLink.all_tenants.create(
        tenant_id=prompt.tenant_id, prompt=prompt, token_hash=_link_hash(token), email=email
    )
    Prompt.all_tenants.filter(pk=prompt.pk).update(escalated_at=timezone.now())
    url = base_url.rstrip("/") + reverse("approval_link", args=[token])
    transcript_append(
        session=prompt.session,
        kind="prompt.escalated",
        actor=actor_label(actor),
        action=prompt.action,
        data={"prompt": str(prompt.pk), "to": email},
    )
    body = (
        f"{prompt.title}\n\n{prompt.detail}\n\nEndpoint: {prompt.endpoint.hostname}\n"
        f"Answer before {prompt.deadline_at:%Y-%m-%d %H:%M %Z}: {url}\n\n"
        "The link works once and expires with the request."
    )
    transaction.on_commit(
        lambda: send_mail(f"Approval requested: {prompt.title}", body, settings.DEFAULT_FROM_EMAIL, [email])
    )
    return link


def approval_link_find(*, token: str) -> ApprovalLink | None:
    return (
        ApprovalLink.all_tenants.select_related("prompt", "prompt__endpoint", "prompt__session", "prompt__tenant")
        .filter(token_hash=_link_hash(token))
        .first()
    )


def approval_link_usable(link: ApprovalLink | None) -> bool:
    return (
        link is not None and link.used_at is None and link.prompt.is_open and link.prompt.deadline_at > timezone.now()
    )


def approval_link_visit(*, link: ApprovalLink, ip: str, user_agent: str, outcome: str) -> None:
    ApprovalLinkVisit.all_tenants.create(link=link, ip=ip[:64], user_agent=user_agent[:500], outcome=outcome)


@transaction.atomic
def approval_link_decide(*, token: str, approve: bool, ip: str, user_agent: str) -> bool:
    link = approval_link_find(token=token)
    if link is None:
        return False
    # Single use: whoever marks it used first decides; a second submission changes nothing.
    claimed = ApprovalLink.all_tenants.filter(pk=link.pk, used_at__isnull=True).update(used_at=timezone.now())
    prompt = _fresh(link.prompt)
    ok = bool(claimed) and prompt.is_open and prompt.deadline_at > timezone.now()
    approval_link_visit(
        link=link, ip=ip, user_agent=user_agent, outcome=("approved" if approve else "denied") if ok else "refused"
    )
    if not ok:
        return False
    return prompt_transition(
        prompt,
        S.APPROVED if approve else S.DENIED,
        party=PromptParty.APPROVER,
        decided_at=timezone.now(),
        decided_by=f"approver:{link.email}",
        detail=f"{'approved' if approve else 'denied'} by {link.email} from {ip}",
    )


def public_base_url(request) -> str:
    """Where links in emails point: CAISEY_PUBLIC_URL when set, else the address the technician used."""
    return settings.CAISEY_PUBLIC_URL or request.build_absolute_uri("/")
