"""The write path for support sessions and actions.

Every function writes the change, its transcript entry and any outbox message
in one transaction, and tells console pages only after commit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from bridge import notify, outbox
from bridge.models import OutboxMessage, OutboxStatus
from bridge.services import bridge_conditions, bridge_conditions_many, endpoint_set_mode
from caisey.errors import Rejected
from caisey.state_machine import IllegalTransition, TransitionRace, transition
from caisey_agent import protocol as p
from endpoints.models import Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of
from endpoints.selectors import approval_policy_for
from endpoints.services import actor_label
from sessions_app.models import (
    ACTION_FINAL,
    ACTION_TRANSITIONS,
    SESSION_TRANSITIONS,
    Action,
    ActionOutput,
    ActionStatus,
    Batch,
    BulkRun,
    SessionStatus,
    SupportSession,
)
from sessions_app.services.transcript import transcript_append


class SessionError(Rejected):
    """A request that cannot be honoured; the message is for the technician."""


def _require_operator(actor, tenant_id) -> None:
    membership = getattr(actor, "membership", None)
    if membership is None or membership.tenant_id != tenant_id or not membership.can_operate:
        raise PermissionDenied("only the tenant's technicians and admins can do this")


def _session_event(session: SupportSession, event: str, payload: dict[str, Any]) -> None:
    notify.console_event(
        tenant_id=session.tenant_id,
        event=event,
        payload={"session_id": str(session.pk), **payload},
        topics={"session": session.pk},
        tenant_wide=False,
    )


def _touch(session: SupportSession) -> None:
    SupportSession.all_tenants.filter(pk=session.pk).update(last_activity_at=timezone.now())


# --- sessions ----------------------------------------------------------------------


@transaction.atomic
def session_open(*, actor, endpoint: Endpoint, reason: str = "", conditions: dict | None = None) -> SupportSession:
    """Open a session; wakes the endpoint. Offline endpoints open read-only (queue, notes, follow-up).
    ``conditions``: the bridge conditions, when the caller read them for many endpoints at once."""
    _require_operator(actor, endpoint.tenant_id)
    endpoint.refresh_from_db()
    if endpoint.status != EndpointStatus.ENROLLED:
        raise SessionError("this endpoint was revoked; it cannot be worked on")
    offline = presence_of(endpoint) == Presence.OFFLINE
    conditions = conditions or bridge_conditions(endpoint=endpoint)
    session = SupportSession.all_tenants.create(
        tenant_id=endpoint.tenant_id,
        endpoint=endpoint,
        opened_by=actor,
        reason=reason[:500],
        opened_offline=offline,
        connectivity=conditions["connectivity"],
    )
    transcript_append(
        session=session,
        kind="session.opened",
        actor=actor_label(actor),
        data={
            "reason": session.reason,
            "endpoint": endpoint.hostname,
            "offline": offline,
            "bridge": conditions,
            "machine_context": endpoint.machine_context,
        },
    )
    endpoint_set_mode(endpoint=endpoint, mode="active", reason="session opened")
    return session


@transaction.atomic
def session_close(*, actor, session: SupportSession, reason: str = "") -> None:
    _require_operator(actor, session.tenant_id)
    session = SupportSession.all_tenants.select_for_update().get(pk=session.pk)
    if session.status != SessionStatus.OPEN:
        raise SessionError("the session is already closed")
    _close(session, by=actor_label(actor), reason=reason)


def _close(session: SupportSession, *, by: str, reason: str, synthetic: bool = False) -> None:
    """How every session closes (by its technician, a bulk run, the abandoned sweep): the
    transition, the closing entry, the live event, and the endpoint rests if nothing else is open
    on it. Raises TransitionRace when the session moved meanwhile."""
    transition(
        session,
        to=SessionStatus.CLOSED,
        table=SESSION_TRANSITIONS,
        updates={"closed_at": timezone.now(), "close_reason": reason[:500], "status_changed_by": by},
    )
    transcript_append(
        session=session,
        kind="session.closed",
        actor=by,
        data={"reason": reason, **({"synthetic": True} if synthetic else {})},
    )
    _session_event(session, "session.closed", {"reason": reason})
    endpoint_rest_if_idle(endpoint_id=session.endpoint_id)


@transaction.atomic
def session_add_note(*, actor, session: SupportSession, text: str) -> None:
    _require_operator(actor, session.tenant_id)
    text = text.strip()
    if not text:
        raise SessionError("a note needs some text")
    if len(text) > 10_000:
        raise SessionError("a note is limited to 10,000 characters")
    entry = transcript_append(session=session, kind="note", actor=actor_label(actor), data={"text": text})
    _touch(session)
    _session_event(session, "session.note", {"index": entry.index, "text": text, "actor": entry.actor})


@transaction.atomic
def session_schedule_follow_up(*, actor, session: SupportSession, at: datetime, note: str = "") -> None:
    if at <= timezone.now():
        raise SessionError("a follow-up must be in the future")
    SupportSession.all_tenants.filter(pk=session.pk).update(follow_up_at=at, follow_up_note=note[:500])
    transcript_append(
        session=session,
        kind="session.follow_up_scheduled",
        actor=actor_label(actor),
        data={"at": at.isoformat(), "note": note},
    )


def endpoint_rest_if_idle(*, endpoint_id) -> bool:
    """Return an endpoint to lazy when no open session remains on it."""
    if SupportSession.all_tenants.filter(endpoint_id=endpoint_id, status=SessionStatus.OPEN).exists():
        return False
    endpoint = Endpoint.all_tenants.get(pk=endpoint_id)
    return endpoint_set_mode(endpoint=endpoint, mode="lazy", reason="no open session")


# --- actions -------------------------------------------------------------------------------


def _fresh(action: Action) -> Action:
    """The caller's copy may be stale: transitions start from the row as it is now, locked."""
    return Action.all_tenants.select_for_update().select_related("session", "endpoint").get(pk=action.pk)


def _set_status(action: Action, to: str, *, by: str, **updates) -> bool:
    """Apply a transition; False (and nothing written) when a concurrent change got there first."""
    try:
        transition(action, to=to, table=ACTION_TRANSITIONS, updates={"status_changed_by": by, **updates})
    except TransitionRace:
        action.refresh_from_db()
        return False
    return True


def _action_event(action: Action, event: str, extra: dict[str, Any] | None = None) -> None:
    notify.console_event(
        tenant_id=action.tenant_id,
        event=event,
        tenant_wide=False,
        topics={"session": action.session_id},
        payload={
            "session_id": str(action.session_id),
            "action_id": str(action.pk),
            "status": action.status,
            **(extra or {}),
        },
    )


@transaction.atomic
def action_request(
    *,
    actor,
    session: SupportSession,
    kind: str,
    params: dict[str, Any],
    expires_in: timedelta | None = None,
    batch: Batch | None = None,
    position: int = 0,
    bulk_run: BulkRun | None = None,
    hold: bool = False,
    conditions: dict | None = None,
) -> Action:
    """Queue an action on the session's endpoint. It waits in the outbox while the endpoint is away,
    until ``expires_in`` (default from settings). ``hold`` queues it without sending (batches)."""
    _require_operator(actor, session.tenant_id)
    if session.status != SessionStatus.OPEN:
        raise SessionError("this session is closed")
    try:
        clean = p.validate_params(kind, params)
    except p.ProtocolError as exc:
        raise SessionError(exc.detail) from None
    spec = p.ACTION_KINDS[kind]
    cfg = settings.CAISEY
    endpoint = Endpoint.all_tenants.get(pk=session.endpoint_id)
    if endpoint.status != EndpointStatus.ENROLLED:
        raise SessionError("this endpoint was revoked; nothing more can run on it")
    expires_at = timezone.now() + (expires_in or timedelta(seconds=cfg["ACTION_QUEUE_EXPIRY_S"]))
    action = Action.all_tenants.create(
        tenant_id=session.tenant_id,
        session=session,
        endpoint=endpoint,
        batch=batch,
        batch_position=position,
        bulk_run=bulk_run,
        kind=kind,
        category=spec.category,
        params=clean,
        requested_by=actor,
        timeout_s=spec.default_timeout,
        output_limit=cfg["ACTION_OUTPUT_LIMIT"],
        expires_at=expires_at,
    )
    transcript_append(
        session=session,
        kind="action.queued",
        actor=actor_label(actor),
        action=action,
        data={
            "kind": kind,
            "category": spec.category,
            "params": clean,
            "expires_at": expires_at.isoformat(),
            "batch": str(batch.pk) if batch else None,
            "offline": presence_of(endpoint) == Presence.OFFLINE,
        },
    )
    if not hold:
        policy = approval_policy_for(endpoint=endpoint)
        if policy.gates(spec.category):
            _await_approval([action], actor=actor, session=session, policy=policy)
        else:
            _dispatch(action, conditions=conditions)
    _touch(session)
    _action_event(action, "action.queued", {"kind": kind})
    return action


def _dispatch(action: Action, *, conditions: dict | None = None) -> None:
    """Put the action.run in the outbox; it stays queued until the agent acknowledges it.

    Asked of an online endpoint, it gets the normal retry budget and ends failed_to_deliver
    when the path is broken; queued for an offline endpoint, it waits for its return
    until the action's expiry.
    """
    endpoint = Endpoint.all_tenants.get(pk=action.endpoint_id)
    waits_for_return = presence_of(endpoint) == Presence.OFFLINE
    message = outbox.outbox_enqueue(
        endpoint=endpoint,
        body=p.ActionRun(
            action_id=str(action.pk),
            kind=action.kind,
            category=action.category,
            params=action.params,
            timeout=action.timeout_s,
            output_limit=action.output_limit,
            requested_by=action.requested_by.get_username(),
        ),
        ref_type="action",
        ref_id=str(action.pk),
        expires_at=action.expires_at,
        max_attempts=100_000 if waits_for_return else None,
    )
    Action.all_tenants.filter(pk=action.pk).update(
        outbox_id=message.pk, conditions_at_dispatch=conditions or bridge_conditions(endpoint=endpoint)
    )
    action.outbox_id = message.pk
    endpoint_set_mode(endpoint=endpoint, mode="active", reason="action queued")


@transaction.atomic
def action_cancel(*, actor, action: Action) -> None:
    """Console wins: the action is cancelled now; a running process is told to stop."""
    _require_operator(actor, action.tenant_id)
    action = _fresh(action)
    previous = action.status
    try:
        if not _set_status(action, ActionStatus.CANCELLED, by=actor_label(actor), finished_at=timezone.now()):
            raise SessionError(f"the action is already {action.status}")
    except IllegalTransition:
        raise SessionError(f"the action is already {action.get_status_display().lower()}") from None
    message = OutboxMessage.all_tenants.filter(pk=action.outbox_id).first() if action.outbox_id else None
    if message is not None and message.status in (OutboxStatus.QUEUED, OutboxStatus.FAILED_TO_DELIVER):
        outbox.outbox_cancel(actor=actor, message=message)
    elif previous in (ActionStatus.DISPATCHED, ActionStatus.RUNNING, ActionStatus.QUEUED):
        outbox.outbox_enqueue(
            endpoint=action.endpoint,
            body=p.ActionCancel(action_id=str(action.pk)),
            ref_type="action.cancel",
            ref_id=str(action.pk),
        )
    transcript_append(
        session=action.session,
        kind="action.cancelled",
        actor=actor_label(actor),
        action=action,
        data={"was": previous},
    )
    _action_event(action, "action.status")
    if previous == ActionStatus.AWAITING_APPROVAL:
        from sessions_app.services.approvals import prompt_cancel_covering  # prompts calls back into this module

        prompt_cancel_covering(actor=actor, action=action)
    _continue_batch(action)


@transaction.atomic
def action_resend(*, actor, action: Action) -> None:
    """After failed_to_deliver: the same action.run (same event id) gets a fresh retry budget."""
    _require_operator(actor, action.tenant_id)
    action = _fresh(action)
    if action.status != ActionStatus.FAILED_TO_DELIVER:
        raise SessionError("only an action that could not be delivered can be resent")
    message = OutboxMessage.all_tenants.get(pk=action.outbox_id)
    outbox.outbox_resend(actor=actor, message=message)
    _set_status(action, ActionStatus.QUEUED, by=actor_label(actor))
    transcript_append(
        session=action.session,
        kind="action.resent",
        actor=actor_label(actor),
        action=action,
        data={"attempts_so_far": message.attempts},
    )
    _action_event(action, "action.status")


@transaction.atomic
def batch_request(*, actor, session: SupportSession, items: list[tuple[str, dict[str, Any]]]) -> Batch:
    """Queue several actions to run in order; the next is sent when the previous one ends."""
    _require_operator(actor, session.tenant_id)
    if not items:
        raise SessionError("a batch needs at least one action")
    batch = Batch.all_tenants.create(tenant_id=session.tenant_id, session=session, created_by=actor)
    actions = [
        action_request(actor=actor, session=session, kind=kind, params=params, batch=batch, position=i, hold=True)
        for i, (kind, params) in enumerate(items)
    ]
    transcript_append(
        session=session,
        kind="batch.queued",
        actor=actor_label(actor),
        data={"batch": str(batch.pk), "actions": [str(a.pk) for a in actions]},
    )
    policy = approval_policy_for(endpoint=session.endpoint)
    if any(policy.gates(a.category) for a in actions):
        _await_approval(actions, actor=actor, session=session, policy=policy, batch=batch)
    else:
        _dispatch(actions[0])
    return batch


def _await_approval(
    actions: list[Action], *, actor, session: SupportSession, policy, batch: Batch | None = None
) -> None:
    """Hold the actions until the end user approves; one prompt covers a whole batch."""
    from sessions_app.services import approvals as prompts

    for action in actions:
        _set_status(action, ActionStatus.AWAITING_APPROVAL, by="policy")
    what = "; ".join(_describe(a) for a in actions)
    prompts.prompt_issue(
        actor=actor,
        session=session,
        action=actions[0],
        batch=batch,
        title=prompts.prompt_title(
            actor=actor, session=session, what=actions[0].kind if len(actions) == 1 else f"{len(actions)} steps"
        ),
        detail=what,
        deadline_s=policy.response_deadline_s,
        allow_escalation=policy.allow_escalation,
    )


def _describe(action: Action) -> str:
    if action.kind == "shell":
        return f"shell command: {action.params.get('command', '')}"
    params = ", ".join(f"{k}={v}" for k, v in action.params.items())
    return f"{p.ACTION_KINDS[action.kind].title}{' (' + params + ')' if params else ''}"


def action_release(*, action: Action, prompt) -> None:
    """The prompt was approved: the action (or the first step of its batch) goes out now."""
    if not _set_status(action, ActionStatus.QUEUED, by=prompt.state_changed_by):
        return
    transcript_append(
        session=action.session,
        kind="action.approved",
        actor=prompt.state_changed_by,
        action=action,
        data={"prompt": str(prompt.pk), "decided_by": prompt.decided_by},
    )
    _action_event(action, "action.status")
    first_waiting = (
        action.batch_id is None
        or not Action.all_tenants.filter(batch_id=action.batch_id, batch_position__lt=action.batch_position)
        .exclude(status__in=ACTION_FINAL)
        .exists()
    )
    if first_waiting:
        _dispatch(action)


def action_stop_unapproved(*, action: Action, prompt_state: str) -> None:
    """Denied, cancelled or expired: the action never runs."""
    to = ActionStatus.EXPIRED if prompt_state == "expired" else ActionStatus.CANCELLED
    if _set_status(action, to, by="policy", finished_at=timezone.now()):
        transcript_append(
            session=action.session,
            kind=f"action.{to}",
            actor="policy",
            action=action,
            data={"why": f"approval prompt {prompt_state}"},
        )
        _action_event(action, "action.status")


def _action_ended(action: Action) -> None:
    """What follows an action's end without the technician: the next step of its batch, or the
    close of the session a bulk run opened for it."""
    _continue_batch(action)
    _bulk_session_finish(action)


def _bulk_session_finish(action: Action) -> None:
    """A bulk run opens a session per endpoint for its one action; once that action ended the
    session closes and the endpoint rests (thousands of woken agents would otherwise beat every
    10 s until the idle sweep). A session a technician went on working in stays open."""
    if action.bulk_run_id is None:
        return
    session = SupportSession.all_tenants.select_for_update().get(pk=action.session_id)
    if (
        session.status != SessionStatus.OPEN
        or Action.all_tenants.filter(session=session).exclude(pk=action.pk).exists()
    ):
        return
    _close(session, by="system", reason="the bulk run's action on this endpoint ended")


def _continue_batch(action: Action) -> None:
    if action.batch_id is None:
        return
    following = (
        Action.all_tenants.filter(
            batch_id=action.batch_id, batch_position__gt=action.batch_position, status=ActionStatus.QUEUED, outbox_id=""
        )
        .order_by("batch_position")
        .first()
    )
    if following is None:
        return
    if action.status == ActionStatus.CANCELLED:
        # Stopping one step of a batch stops the rest: they were meant to run in order.
        for rest in Action.all_tenants.filter(batch_id=action.batch_id, status=ActionStatus.QUEUED, outbox_id=""):
            _set_status(rest, ActionStatus.CANCELLED, by="system", finished_at=timezone.now())
            transcript_append(
                session=rest.session,
                kind="action.cancelled",
                actor="system",
                action=rest,
                data={"why": "an earlier step of its batch was cancelled"},
            )
        return
    _dispatch(following)


@transaction.atomic
def bulk_run_start(
    *,
    actor,
    endpoints: list[Endpoint],
    kind: str,
    params: dict[str, Any],
    reason: str = "",
    expires_in: timedelta = timedelta(hours=4),
) -> BulkRun:
    """One diagnostic across many endpoints: a session per endpoint, offline ones stay queued."""
    membership = getattr(actor, "membership", None)
    if membership is None:
        raise PermissionDenied("only the tenant's technicians and admins can do this")
    if not endpoints:
        raise SessionError("choose at least one endpoint")
    tenant_id = endpoints[0].tenant_id
    _require_operator(actor, tenant_id)
    if any(e.tenant_id != tenant_id for e in endpoints):
        raise PermissionDenied("endpoints of another tenant")
    try:
        clean = p.validate_params(kind, params)
    except p.ProtocolError as exc:
        raise SessionError(exc.detail) from None
    run = BulkRun.all_tenants.create(
        tenant_id=tenant_id,
        created_by=actor,
        kind=kind,
        params=clean,
        reason=reason[:500],
        expires_at=timezone.now() + expires_in,
    )
    conditions = bridge_conditions_many(endpoint_ids=[e.pk for e in endpoints])
    for endpoint in endpoints:
        session = session_open(
            actor=actor, endpoint=endpoint, reason=f"bulk run: {reason or kind}", conditions=conditions[endpoint.pk]
        )
        action_request(
            actor=actor,
            session=session,
            kind=kind,
            params=clean,
            expires_in=expires_in,
            bulk_run=run,
            conditions=conditions[endpoint.pk],
        )
    return run


# --- what the agent and the bridge report ------------------------------------------------------


def _agent_action(endpoint: Endpoint, action_id: str) -> Action | None:
    """The action an agent reports on; only its own endpoint's actions are reachable."""
    try:
        return Action.all_tenants.select_related("session").get(pk=action_id, endpoint_id=endpoint.pk)
    except (Action.DoesNotExist, ValueError, ValidationError):
        return None


@transaction.atomic
def action_delivered(*, message: OutboxMessage) -> None:
    action = Action.all_tenants.select_related("session").filter(pk=message.ref_id).first()
    if action is None or action.status not in (ActionStatus.QUEUED, ActionStatus.FAILED_TO_DELIVER):
        return
    if _set_status(
        action,
        ActionStatus.DISPATCHED,
        by="bridge",
        dispatched_at=timezone.now(),
        deadline_at=timezone.now() + timedelta(seconds=action.timeout_s + settings.CAISEY["ACTION_DEADLINE_GRACE_S"]),
    ):
        transcript_append(
            session=action.session,
            kind="action.dispatched",
            actor="bridge",
            action=action,
            data={"attempts": message.attempts, "latency_ms": message.latency_ms},
        )
        _action_event(action, "action.status")


@transaction.atomic
def action_undeliverable(*, message: OutboxMessage) -> None:
    action = Action.all_tenants.select_related("session").filter(pk=message.ref_id).first()
    if action is None or action.status != ActionStatus.QUEUED:
        return
    expired = action.expires_at is not None and action.expires_at <= timezone.now()
    to = ActionStatus.EXPIRED if expired else ActionStatus.FAILED_TO_DELIVER
    if _set_status(action, to, by="bridge", finished_at=timezone.now() if expired else None):
        transcript_append(
            session=action.session,
            kind=f"action.{to}",
            actor="bridge",
            action=action,
            data={"attempts": message.attempts, "last_error": message.last_error},
        )
        _action_event(action, "action.status", {"attempts": message.attempts, "last_error": message.last_error})
        if expired:
            _action_ended(action)


@transaction.atomic
def action_output_receive(*, endpoint: Endpoint, body: p.ActionOutput) -> None:
    action = _agent_action(endpoint, body.action_id)
    if action is None:
        return
    if body.stream == "status" and body.seq == 0:
        if action.status in (ActionStatus.QUEUED, ActionStatus.DISPATCHED, ActionStatus.FAILED_TO_DELIVER):
            if _set_status(action, ActionStatus.RUNNING, by="agent", started_at=timezone.now()):
                transcript_append(session=action.session, kind="action.running", actor="agent", action=action)
                _action_event(action, "action.status")
        return
    if ActionOutput.all_tenants.filter(action=action, seq=body.seq).exists():
        return
    data = body.data
    room = action.output_limit - action.output_bytes
    truncated = False
    if len(data.encode()) > room:
        data = data.encode()[: max(room, 0)].decode(errors="ignore")
        truncated = True
    if action.output_truncated:
        return  # past the cap: the marker is already stored
    if truncated:
        data += f"\n[output truncated: limit of {action.output_limit} bytes reached]"
    ActionOutput.all_tenants.create(action=action, seq=body.seq, stream=body.stream, data=data)
    Action.all_tenants.filter(pk=action.pk).update(
        output_bytes=action.output_bytes + len(data.encode()), output_truncated=truncated or action.output_truncated
    )
    transcript_append(
        session=action.session,
        kind="action.output",
        actor="agent",
        action=action,
        data={"seq": body.seq, "stream": body.stream, "data": data},
    )
    _action_event(action, "action.output", {"seq": body.seq, "stream": body.stream, "data": data})


_RESULT_STATUS = {
    "succeeded": ActionStatus.SUCCEEDED,
    "failed": ActionStatus.FAILED,
    "timed_out": ActionStatus.TIMED_OUT,
    "cancelled": ActionStatus.CANCELLED,
    "refused": ActionStatus.FAILED,
}


@transaction.atomic
def action_result_receive(*, endpoint: Endpoint, body: p.ActionResult) -> None:
    action = _agent_action(endpoint, body.action_id)
    if action is None or body.status not in _RESULT_STATUS:
        return
    conditions = bridge_conditions(endpoint=endpoint)
    data = {"status": body.status, "exit_code": body.exit_code, "error": body.error, "result": body.result}
    if action.is_final:
        # Console wins for cancellation: a late result is recorded, the status stays.
        transcript_append(
            session=action.session,
            kind="action.result_ignored",
            actor="agent",
            action=action,
            data={**data, "why": f"the action was already {action.status}"},
        )
        return
    error = body.error
    if body.status == "refused":
        error = f"refused by the endpoint: {body.error}"
    started = datetime.fromtimestamp(body.started_at, tz=UTC) if body.started_at else action.started_at
    finished = datetime.fromtimestamp(body.finished_at, tz=UTC) if body.finished_at else timezone.now()
    to = _RESULT_STATUS[body.status]
    if not _set_status(
        action,
        to,
        by="agent",
        exit_code=body.exit_code,
        result=body.result,
        error=error[:10_000],
        started_at=started,
        finished_at=finished,
        conditions_at_completion=conditions,
    ):
        return
    transcript_append(
        session=action.session,
        kind="action.result",
        actor="agent",
        action=action,
        data={**data, "error": error, "bridge": conditions},
    )
    _action_event(action, "action.status", {"exit_code": body.exit_code, "error": error})
    _action_ended(action)


def action_deadline_sweep() -> int:
    """Actions that should have finished long ago on an endpoint that is online: timed out."""
    now = timezone.now()
    count = 0
    overdue = Action.all_tenants.filter(
        status__in=[ActionStatus.DISPATCHED, ActionStatus.RUNNING], deadline_at__lt=now
    ).select_related("endpoint", "session")
    for action in overdue:
        if presence_of(action.endpoint, now) == Presence.OFFLINE:
            continue  # its result may be waiting on the endpoint: replayed when it returns
        with transaction.atomic():
            if _set_status(action, ActionStatus.TIMED_OUT, by="system", finished_at=now):
                transcript_append(
                    session=action.session,
                    kind="action.timed_out",
                    actor="system",
                    action=action,
                    data={"why": "no result by the deadline while the endpoint was online"},
                )
                _action_event(action, "action.status")
                _action_ended(action)
                count += 1
    return count


def idle_sessions_sweep() -> int:
    """Let endpoints rest when their open sessions have been idle past the timeout."""
    cutoff = timezone.now() - timedelta(seconds=settings.CAISEY["LAZY_AFTER_IDLE_S"])
    active = Endpoint.all_tenants.filter(mode="active").values_list("pk", flat=True)
    rested = 0
    for endpoint_id in active:
        busy = SupportSession.all_tenants.filter(
            endpoint_id=endpoint_id, status=SessionStatus.OPEN, last_activity_at__gte=cutoff
        ).exists()
        running = Action.all_tenants.filter(
            endpoint_id=endpoint_id, status__in=[ActionStatus.QUEUED, ActionStatus.DISPATCHED, ActionStatus.RUNNING]
        ).exists()
        if not busy and not running:
            with transaction.atomic():
                rested += endpoint_set_mode(
                    endpoint=Endpoint.all_tenants.get(pk=endpoint_id), mode="lazy", reason="sessions idle"
                )
    return rested


@transaction.atomic
def follow_up_request(*, actor, session: SupportSession, at: datetime, note: str = "") -> None:
    """Ask the end user to approve a follow-up session at a later time."""
    from sessions_app.services import approvals as prompts

    _require_operator(actor, session.tenant_id)
    if at <= timezone.now():
        raise SessionError("a follow-up must be in the future")
    policy = approval_policy_for(endpoint=session.endpoint)
    prompts.prompt_issue(
        actor=actor,
        session=session,
        follow_up_at=at,
        title=prompts.prompt_title(actor=actor, session=session, what=f"a follow-up session at {at:%Y-%m-%d %H:%M}"),
        detail=note or "A technician would like to continue this support session later.",
        deadline_s=max(policy.response_deadline_s, 3600),
        allow_escalation=policy.allow_escalation,
    )


def abandoned_sessions_sweep() -> int:
    """Close sessions nobody works on any more (technician gone, endpoint gone, or idle too long)
    with a synthetic closing entry that says why."""
    cutoff = timezone.now() - timedelta(seconds=settings.CAISEY["SESSION_ABANDON_AFTER_S"])
    closed = 0
    for session in SupportSession.all_tenants.filter(status=SessionStatus.OPEN).select_related("opened_by", "endpoint"):
        if not session.opened_by.is_active:
            why = "the technician's account was deactivated"
        elif session.endpoint.status == "revoked":
            why = "the endpoint was revoked"
        elif session.last_activity_at < cutoff:
            why = f"no activity since {session.last_activity_at:%Y-%m-%d %H:%M %Z}"
        else:
            continue
        with transaction.atomic():
            try:
                _close(session, by="system", reason=f"abandoned: {why}", synthetic=True)
            except TransitionRace:
                continue
            closed += 1
    return closed
