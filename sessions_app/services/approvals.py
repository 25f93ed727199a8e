"""Approval prompts: one state machine, three views (console, bridge, runtime), one truth.

The database is the ledger. Every change goes through ``prompt_transition``,
which checks the table, applies a conditional update, and records the party
that reported it. Who wins (docs/architecture.md, State machines):
- the runtime, for the end user's own actions: acknowledged, approved, denied;
  a decision made before the deadline is honoured even when it arrives late;
- the bridge, for delivery: pending, delivered, failed_to_deliver; a runtime
  report that it holds a prompt is proof of delivery;
- the console, for cancelled and superseded: such a prompt never resolves
  later; a late decision for it is recorded as ignored and the runtime is told
  to withdraw it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from bridge import outbox
from bridge.models import OutboxMessage, OutboxStatus
from caisey import secrets, tenancy
from caisey.actors import Actor, actor_label
from caisey.errors import Conflict
from caisey.transactions import retrying_atomic
from caisey_agent import protocol as p
from endpoints.access import acting_for
from endpoints.models import Endpoint
from endpoints.selectors import approval_policy_for
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import (
    PROMPT_ENDED,
    PROMPT_OPEN,
    Action,
    ApprovalLink,
    ApprovalLinkVisit,
    Prompt,
    PromptParty,
    PromptState,
)
from sessions_app.selectors import approvals as approval_selectors
from sessions_app.services import actions, followups, locks, prompting
from sessions_app.services.prompting import (  # noqa: F401  (part of this module's interface)
    PromptError,
    prompt_issue,
    prompt_title,
)
from sessions_app.services.transcript import transcript_append

log = logging.getLogger(__name__)
S = PromptState


# --- the one transition function -------------------------------------------------------


def prompt_transition(prompt: Prompt, to: str, *, party: str, detail: str = "", **updates: Any) -> bool:
    """Move a prompt and apply the consequences; False when the move is not allowed from where it
    is now or lost a race (reports from several parties cross: both are expected)."""
    if not prompting.prompt_record(prompt, to, party=party, detail=detail, **updates):
        return False
    _consequences(prompt, to)
    return True


def _consequences(prompt: Prompt, to: str) -> None:
    if to in (S.APPROVED, S.DENIED):
        prompting.prompt_stop_showing(prompt)
    if to == S.APPROVED:
        actions.actions_release_held(prompt=prompt)
        if prompt.follow_up_at:
            followups.follow_up_from_approval(prompt=prompt)
    elif to in (S.DENIED, S.EXPIRED, S.CANCELLED):
        actions.actions_stop_held(prompt=prompt, prompt_state=to)
    if to in (S.CANCELLED, S.SUPERSEDED, S.EXPIRED):
        prompting.prompt_withdraw(prompt, reason=to)


# --- the console's transitions (the technician's tenant bound) -------------------------------


@retrying_atomic()
def prompt_cancel(*, actor: Actor, prompt: Prompt) -> None:
    with acting_for(actor, prompt.tenant_id):
        prompt = prompting.prompt_fresh(prompt)
        if not prompt.is_open or not prompt_transition(
            prompt, S.CANCELLED, party=PromptParty.CONSOLE, detail=f"cancelled by {actor_label(actor)}"
        ):
            raise PromptError(f"the prompt is already {prompt.get_state_display().lower()}")


@retrying_atomic()
def prompt_reissue(*, actor: Actor, prompt: Prompt) -> Prompt:
    """Cancel-and-reissue: the old prompt is superseded and the same request asked again."""
    with acting_for(actor, prompt.tenant_id):
        prompt = prompting.prompt_fresh(prompt)
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


@retrying_atomic()
def prompt_resend(*, actor: Actor, prompt: Prompt) -> None:
    """After failed_to_deliver: send the same prompt again now. A show still waiting for the
    endpoint is made due at once; one the outbox gave up on gets a fresh retry budget."""
    with acting_for(actor, prompt.tenant_id):
        prompt = prompting.prompt_fresh(prompt)
        if prompt.state != S.FAILED_TO_DELIVER:
            raise PromptError("only a prompt that could not be delivered can be resent")
        if prompt.deadline_at <= timezone.now():
            raise PromptError("the prompt's deadline has passed; reissue it instead")
        message = OutboxMessage.objects.filter(pk=prompt.outbox_id).first() if prompt.outbox_id else None
        if message is None or message.status not in (OutboxStatus.QUEUED, OutboxStatus.FAILED_TO_DELIVER):
            prompting.prompt_show(prompt)
        elif message.status == OutboxStatus.QUEUED:
            outbox.outbox_retry_now(actor=actor, message=message)
        else:
            outbox.outbox_resend(actor=actor, message=message)
            OutboxMessage.objects.filter(pk=message.pk).update(expires_at=prompt.deadline_at)
        prompt_transition(prompt, S.PENDING, party=PromptParty.CONSOLE, detail=f"resent by {actor_label(actor)}")


# --- the bridge's view (the endpoint's tenant bound) ------------------------------------------


@retrying_atomic()
def prompt_delivered(*, message: OutboxMessage) -> None:
    with tenancy.bind(message.endpoint.tenant_id):
        prompt = Prompt.objects.select_related("session", "endpoint").filter(pk=message.ref_id).first()
        if prompt is not None and prompt.state in (S.PENDING, S.FAILED_TO_DELIVER):
            prompt_transition(
                prompt,
                S.DELIVERED,
                party=PromptParty.BRIDGE,
                delivered_at=timezone.now(),
                detail=f"acknowledged by the agent after {message.attempts} attempt(s)",
            )


@retrying_atomic()
def prompt_undeliverable(*, message: OutboxMessage) -> None:
    with tenancy.bind(message.endpoint.tenant_id):
        prompt = Prompt.objects.select_related("session", "endpoint").filter(pk=message.ref_id).first()
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


def _decision_ignored(prompt: Prompt, decision: str, **why: Any) -> None:
    """A decision the record does not take (console won, or the prompt was decided already):
    recorded as ignored, and the runtime is told to take its copy down."""
    transcript_append(
        session=prompt.session,
        kind=K.PROMPT_LATE_DECISION_IGNORED,
        actor=PromptParty.RUNTIME,
        action=prompt.action,
        data={"prompt": str(prompt.pk), "decision": decision, "state": prompt.state, **why},
    )
    prompting.prompt_withdraw(prompt, reason=prompt.state)


def _runtime_says(prompt: Prompt, state: str, decided_at: datetime | None, decided_by: str) -> None:
    """Apply what the runtime reports about one prompt, by the reconciliation rules."""
    if state in (S.APPROVED, S.DENIED):
        if prompt.state in (S.CANCELLED, S.SUPERSEDED):
            _decision_ignored(prompt, state, decided_at=decided_at.isoformat() if decided_at else None)
            return
        if prompt.state == state:
            return  # already applied (a replay)
        if prompt.state in (S.APPROVED, S.DENIED):
            # The runtime lost its state and asked again (a reinstall, a replayed show); the first
            # decision is the record, so the runtime is told to take its copy down.
            _decision_ignored(prompt, state, why="the prompt was already decided")
            return
        now = timezone.now()
        made_at = decided_at or now  # an agent that did not say when: when it reached us
        if made_at > prompt.deadline_at:
            _decision_too_late(prompt, state, made_at)
            return
        late = prompt.state == S.EXPIRED
        who = decided_by or "the user"
        detail = f"{state} on the endpoint by {who}"
        if late:
            detail += (
                f" at {_hms(made_at)}, before the deadline {_hms(prompt.deadline_at)}; reported at {_hms(now)},"
                " after the prompt had expired here: honoured"
            )
        if (
            prompt_transition(
                prompt,
                state,
                party=PromptParty.RUNTIME,
                decided_at=made_at,
                decided_by=decided_by[:200],
                reported_at=now,
                detail=detail,
            )
            and late
        ):
            _late_decision_honoured(prompt, state)
        return
    if state in (S.DELIVERED, S.ACKNOWLEDGED):
        if prompt.state in PROMPT_ENDED:
            prompting.prompt_withdraw(prompt, reason=prompt.state)
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


def _hms(at: datetime) -> str:
    return f"{timezone.localtime(at):%H:%M:%S}"


def _decision_too_late(prompt: Prompt, decision: str, made_at: datetime) -> None:
    """A decision the runtime made after the deadline: refused, recorded once, said on the card.
    A prompt the deadline sweep has not reached yet expires now."""
    if prompt.is_open:
        prompt_transition(
            prompt, S.EXPIRED, party=PromptParty.SYSTEM, detail="expired: the only decision came after the deadline"
        )
    if prompt.late_decision:
        return  # already recorded (the same decision reported again by a heartbeat)
    Prompt.objects.filter(pk=prompt.pk).update(late_decision=decision, late_decision_at=made_at)
    prompt.late_decision, prompt.late_decision_at = decision, made_at
    transcript_append(
        session=prompt.session,
        kind=K.PROMPT_LATE_DECISION_IGNORED,
        actor=PromptParty.RUNTIME,
        action=prompt.action,
        data={
            "prompt": str(prompt.pk),
            "decision": decision,
            "state": prompt.state,
            "why": "decided after the deadline",
            "decided_at": made_at.isoformat(),
            "deadline": prompt.deadline_at.isoformat(),
        },
    )
    prompting.prompt_announce(prompt)


def _late_decision_honoured(prompt: Prompt, decision: str) -> None:
    """A decision made before the deadline reached the server after the prompt expired here:
    honoured. An approval runs its request again (the expiry stopped it) if it still can;
    otherwise the card says why, and a technician may run it with the recorded approval."""
    transcript_append(
        session=prompt.session,
        kind=K.PROMPT_LATE_DECISION_HONOURED,
        actor=PromptParty.RUNTIME,
        action=prompt.action,
        data={
            "prompt": str(prompt.pk),
            "decision": decision,
            "decided_at": prompt.decided_at.isoformat() if prompt.decided_at else None,
            "decided_by": prompt.decided_by or None,
            "deadline": prompt.deadline_at.isoformat(),
            "reported_at": prompt.reported_at.isoformat() if prompt.reported_at else None,
        },
    )
    if decision != S.APPROVED or not (prompt.action_id or prompt.batch_id):
        return
    why = approval_selectors.late_rerun_blocker(prompt, automatic=True)
    if why:
        Prompt.objects.filter(pk=prompt.pk).update(late_not_run=why[:300])
        prompt.late_not_run = why[:300]
        transcript_append(
            session=prompt.session,
            kind=K.PROMPT_LATE_APPROVAL_NOT_RUN,
            actor=PromptParty.SYSTEM,
            action=prompt.action,
            data={"prompt": str(prompt.pk), "why": why},
        )
        prompting.prompt_announce(prompt)
        return
    # The report came over the endpoint's live connection: it is reachable now (its presence,
    # computed from coalesced last-seen times, may lag a second behind a resumed agent).
    _use_recorded_approval(prompt, by=PromptParty.RUNTIME)


def _use_recorded_approval(prompt: Prompt, *, by: str) -> list[Action]:
    """Run the requests the prompt's expiry stopped, once: a second use is a Conflict."""
    now = timezone.now()
    if not Prompt.objects.filter(pk=prompt.pk, approval_used_at__isnull=True).update(
        approval_used_at=now, approval_used_by=by[:200]
    ):
        used = Prompt.objects.values_list("approval_used_by", flat=True).get(pk=prompt.pk)
        raise Conflict(f"the recorded approval was already used (by {used})")
    prompt.approval_used_at, prompt.approval_used_by = now, by[:200]
    reruns = actions.actions_rerun_approved(prompt=prompt, by=by)
    transcript_append(
        session=prompt.session,
        kind=K.PROMPT_RECORDED_APPROVAL_USED,
        actor=by,
        action=prompt.action,
        data={
            "prompt": str(prompt.pk),
            "decided_at": prompt.decided_at.isoformat() if prompt.decided_at else None,
            "decided_by": prompt.decided_by or None,
            "actions": [str(a.pk) for a in reruns],
            "rerun_of": [str(a.rerun_of_id) for a in reruns],
        },
    )
    prompting.prompt_announce(prompt)
    return reruns


@retrying_atomic()
def prompt_run_with_recorded_approval(*, actor: Actor, prompt: Prompt) -> list[Action]:
    """A technician runs the request an approval honoured late could not run by itself, with that
    recorded approval (once; the transcript names who used it)."""
    with acting_for(actor, prompt.tenant_id):
        prompt = prompting.prompt_fresh(prompt)
        if prompt.state != S.APPROVED or not approval_selectors.prompt_honoured_late(prompt):
            raise PromptError("only an approval that reached the server after its prompt expired can be used this way")
        if prompt.approval_used_at:
            raise Conflict(f"the recorded approval was already used (by {prompt.approval_used_by})")
        why = approval_selectors.late_rerun_blocker(prompt, automatic=False)
        if why:
            raise PromptError(f"it cannot run: {why}")
        return _use_recorded_approval(prompt, by=actor_label(actor))


def _own_prompt(endpoint: Endpoint, prompt_id: str) -> Prompt | None:
    try:
        locks.session_lock_holding(Prompt, prompt_id)  # the lock order: its session first
        return (
            Prompt.objects.select_related("session", "endpoint", "tenant")
            .select_for_update(of=("self",))
            .get(pk=prompt_id, endpoint_id=endpoint.pk)
        )
    except (Prompt.DoesNotExist, ValueError, ValidationError):  # malformed ids are unknown prompts
        return None


@retrying_atomic()
def prompt_runtime_update(*, endpoint: Endpoint, body: p.PromptUpdate) -> None:
    with tenancy.bind(endpoint.tenant_id):
        prompt = _own_prompt(endpoint, body.prompt_id)
        if prompt is not None and body.state in PromptState.values:
            _runtime_says(prompt, body.state, _ts(body.decided_at), body.decided_by)


@retrying_atomic()
def prompt_runtime_report(*, endpoint: Endpoint, reports: list[p.PromptReport]) -> dict[str, int]:
    """Converge on hello and heartbeat: the runtime lists every prompt it holds."""
    with tenancy.bind(endpoint.tenant_id):
        return _runtime_report(endpoint, reports)


def _runtime_report(endpoint: Endpoint, reports: list[p.PromptReport]) -> dict[str, int]:
    held = set()
    for report in reports:
        prompt = _own_prompt(endpoint, report.prompt_id)
        if prompt is None:
            continue
        held.add(prompt.pk)
        if report.state in PromptState.values:
            _runtime_says(prompt, report.state, _ts(report.decided_at), report.decided_by)
        if prompt.is_open:
            # The runtime holds it and can be reached: a card that said "asleep" shows the live state.
            prompting.prompt_announce(prompt)
    replayed = 0
    # The server thinks these were delivered, yet the runtime does not hold them: replay.
    # Most hellos and beats hold nothing and owe nothing: one narrow query says so (a restart
    # storm reconciles thousands); the prompts themselves are loaded only when some are missing.
    missing_ids = list(
        Prompt.objects.filter(
            endpoint_id=endpoint.pk, state__in=[S.DELIVERED, S.ACKNOWLEDGED], deadline_at__gt=timezone.now()
        )
        .exclude(pk__in=held)
        .values_list("pk", flat=True)
    )
    if not missing_ids:
        return {"held": len(held), "replayed": 0}
    missing = Prompt.objects.select_related("session", "endpoint", "tenant", "requested_by").filter(pk__in=missing_ids)
    for prompt in missing:
        waiting = OutboxMessage.objects.filter(
            endpoint_id=endpoint.pk, ref_type="prompt", ref_id=str(prompt.pk), status=OutboxStatus.QUEUED
        ).exists()
        if not waiting:
            prompting.prompt_show(prompt)
            transcript_append(
                session=prompt.session,
                kind=K.PROMPT_REPLAYED,
                actor=PromptParty.BRIDGE,
                action=prompt.action,
                data={"prompt": str(prompt.pk), "why": "the runtime did not report holding it"},
            )
            replayed += 1
    return {"held": len(held), "replayed": replayed}


def prompt_reach_sweep() -> int:
    """Pending prompts whose endpoint is known to be away, in every tenant: failed_to_deliver
    now rather than pending until the deadline (each moved in its own tenant's scope)."""
    now = timezone.now()
    count = 0
    with tenancy.system():
        pending = list(Prompt.objects.filter(state=S.PENDING, deadline_at__gt=now).select_related("endpoint"))
        for candidate in pending:
            if not prompting.prompt_unreachable_why(candidate, now=now):
                continue
            with transaction.atomic(), tenancy.bind(candidate.tenant_id):
                count += prompting.prompt_reach_check(prompting.prompt_fresh(candidate), now=now)
    return count


def endpoint_has_open_prompts(*, endpoint_id: Any) -> bool:
    return Prompt.objects.filter(endpoint_id=endpoint_id, state__in=PROMPT_OPEN).exists()


# --- deadlines -------------------------------------------------------------------------------------


def prompt_deadline_sweep() -> int:
    """Prompts past their deadline, in every tenant: expired (each in its tenant's scope)."""
    now = timezone.now()
    count = 0
    with tenancy.system():
        overdue = list(
            Prompt.objects.filter(state__in=PROMPT_OPEN, deadline_at__lte=now).values_list(
                "pk", "tenant_id", "session_id"
            )
        )
        for prompt_id, tenant_id, session_id in overdue:
            with transaction.atomic(), tenancy.bind(tenant_id):
                prompt = prompting.prompt_fresh(Prompt(pk=prompt_id, tenant_id=tenant_id, session_id=session_id))
                if prompt.is_open and prompt.deadline_at <= now:
                    why: str = {
                        S.PENDING: "expired before the endpoint received it",
                        S.FAILED_TO_DELIVER: "expired: the endpoint could not be reached",
                        S.DELIVERED: "expired unanswered: delivered, never seen",
                        S.ACKNOWLEDGED: "expired unanswered: seen, not decided",
                    }[S(prompt.state)]
                    count += prompt_transition(prompt, S.EXPIRED, party=PromptParty.SYSTEM, detail=why)
    return count


# --- escalation to the client's designated approver --------------------------------------------


@retrying_atomic()
def prompt_escalate(*, actor: Actor, prompt: Prompt, base_url: str) -> ApprovalLink:
    """Send a one-time approval link to the client group's designated approver."""
    with acting_for(actor, prompt.tenant_id):
        prompt = prompting.prompt_fresh(prompt)
        if not prompt.is_open:
            raise PromptError(f"the prompt is already {prompt.get_state_display().lower()}")
        if not prompt.allow_escalation:
            raise PromptError("this client's policy does not allow escalating prompts")
        email = prompt.endpoint.client_group.approver_email
        if not email:
            raise PromptError("the client group has no designated approver; set one in the admin")
        why = approval_selectors.escalation_blocker(prompt, endpoint=prompt.endpoint, now=timezone.now())
        if why:
            raise PromptError(why)
        token = secrets.new_secret("apl_")
        link = ApprovalLink.objects.create(
            tenant_id=prompt.tenant_id, prompt=prompt, token_hash=secrets.digest(token), email=email
        )
        Prompt.objects.filter(pk=prompt.pk).update(escalated_at=timezone.now())
        url = base_url.rstrip("/") + reverse("approval_link", args=[token])
        transcript_append(
            session=prompt.session,
            kind=K.PROMPT_ESCALATED,
            actor=actor_label(actor),
            action=prompt.action,
            data={"prompt": str(prompt.pk), "to": email},
        )
        body = (
            f"{p.visible(prompt.title)}\n\n{p.visible(prompt.detail)}\n\nEndpoint: {prompt.endpoint.hostname}\n"
            f"Answer before {prompt.deadline_at:%Y-%m-%d %H:%M %Z}: {url}\n\n"
            "The link works once and expires with the request."
        )
        transaction.on_commit(
            lambda: send_mail(
                f"Approval requested: {p.visible(prompt.title)}", body, settings.DEFAULT_FROM_EMAIL, [email]
            )
        )
        return link


def approval_link_find(*, token: str) -> ApprovalLink | None:
    """The link of a token. A token may be any tenant's: resolving it crosses tenants, by name."""
    with tenancy.system():
        return (
            ApprovalLink.objects.select_related("prompt", "prompt__endpoint", "prompt__session", "prompt__tenant")
            .filter(token_hash=secrets.digest(token))
            .first()
        )


def approval_link_usable(link: ApprovalLink | None) -> bool:
    return (
        link is not None and link.used_at is None and link.prompt.is_open and link.prompt.deadline_at > timezone.now()
    )


def approval_link_visit(*, link: ApprovalLink, ip: str, user_agent: str, outcome: str) -> None:
    ApprovalLinkVisit.objects.create(link=link, ip=ip[:64], user_agent=user_agent[:500], outcome=outcome)


@retrying_atomic()
def approval_link_decide(*, token: str, approve: bool, ip: str, user_agent: str) -> bool:
    """The approver's decision through the link; False when the link is unknown, used or stale
    (the page shows the same plain refusal for all three, on purpose)."""
    link = approval_link_find(token=token)
    if link is None:
        return False
    with tenancy.bind(link.tenant_id):
        # Single use: whoever marks it used first decides; a second submission changes nothing.
        claimed = ApprovalLink.objects.filter(pk=link.pk, used_at__isnull=True).update(used_at=timezone.now())
        prompt = prompting.prompt_fresh(link.prompt)
        ok = bool(claimed) and prompt.is_open and prompt.deadline_at > timezone.now()
        if (
            ok
            and approve
            and approval_selectors.nobody_logged_in(prompt.endpoint)
            and not approval_policy_for(endpoint=prompt.endpoint).allow_without_user
        ):
            # Checked again at the decision: the user may have logged off since the escalation. An
            # approval is refused; a denial runs nothing and is taken.
            ok = False
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


def public_base_url(request: HttpRequest) -> str:
    """Where links in emails point: CAISEY_PUBLIC_URL when set, else the address the technician used."""
    return settings.CAISEY_PUBLIC_URL or request.build_absolute_uri("/")
