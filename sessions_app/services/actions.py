"""The write path for actions: request, cancel, resend, batches, what agents and the bridge
report about them, and the deadline sweep.

Every function writes the change, its transcript entry and any outbox message in one
transaction, and tells console pages only after commit. Technicians' requests bind the
technician's tenant (``acting_for``); agent and bridge reports bind the endpoint's tenant;
the sweep crosses tenants by name and binds each row's tenant for its write.

Below: ``sessions`` (the session an action runs in) and ``prompting`` (the approval ledger's
primitives). Above: ``approvals`` (which releases or stops the actions a prompt held) and
``bulk``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from bridge import health, notify, outbox
from bridge.models import OutboxMessage, OutboxStatus
from bridge.services import bridge_conditions, endpoint_set_mode
from caisey import secretbox, tenancy
from caisey.actors import Actor, Party, actor_label, actor_person
from caisey.event_hooks import OutsideEvent, event_emit
from caisey.state_machine import IllegalTransition, transition_if
from caisey.transactions import retrying_atomic
from caisey_agent import protocol as p
from endpoints.access import StepUp, acting_for
from endpoints.models import AgentMode, Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of
from endpoints.selectors import approval_policy_for
from sessions_app.kinds import TranscriptKind as K
from sessions_app.limits import MAX_BATCH, MAX_EXPIRY, configured_duration
from sessions_app.models import (
    ACTION_FINAL,
    ACTION_TRANSITIONS,
    Action,
    ActionOutput,
    ActionStatus,
    Batch,
    BulkRun,
    Prompt,
    PromptParty,
    PromptState,
    RunbookVersion,
    SessionStatus,
    SupportSession,
    WakeChoice,
)
from sessions_app.selectors.approvals import actions_stopped_by_expiry
from sessions_app.selectors.bulk import bulk_run_progress
from sessions_app.services import locks, prompting
from sessions_app.services.sessions import SessionError, session_end, session_touch
from sessions_app.services.step_up import step_up_record
from sessions_app.services.transcript import transcript_append


def _fresh(action: Action) -> Action:
    """The caller's copy may be stale: transitions start from the row as it is now, locked after
    its session (sessions_app.services.locks)."""
    locks.session_lock(session_id=action.session_id, tenant_id=action.tenant_id)
    return Action.objects.select_for_update(of=("self",)).select_related("session", "endpoint").get(pk=action.pk)


def _move(action: Action, to: str, *, by: str, **updates: Any) -> bool:
    """Apply a transition; False (and nothing written) when a concurrent change got there first. A
    final state wipes the action's secret parameters (its sealed ``secrets``, and the sealed copy in its
    action.run outbox row): nothing can send them any more."""
    locks.session_lock(session_id=action.session_id, tenant_id=action.tenant_id)  # before the action's row
    final = to in ACTION_FINAL and bool(p.secret_names(action.kind))
    if final:
        updates["secrets"] = {}
    moved = transition_if(action, to=to, table=ACTION_TRANSITIONS, updates={"status_changed_by": by, **updates})
    if moved and final:
        _wipe_sent_secrets(action)
    if moved and to in ACTION_FINAL and action.bulk_run_id is not None:
        bulk_run_finish_check(action)
    return moved


def _wipe_sent_secrets(action: Action) -> None:
    """The action.run outbox row keeps the sealed secrets until the action is final: then the mask."""
    if not action.outbox_id:
        return
    message = OutboxMessage.objects.filter(pk=action.outbox_id).first()
    if message is None:
        return
    params = (message.body or {}).get("params")
    if not isinstance(params, dict):
        return
    names = [n for n in p.secret_names(action.kind) if isinstance(params.get(n), dict)]
    if names:
        message.body = {**message.body, "params": {**params, **{n: p.SECRET_MASK for n in names}}}
        message.save(update_fields=["body"])


def action_secrets_seal(*, kind: str, clean: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the parameters as stored and shown, secrets masked; the secrets sealed)."""
    sealed = {
        name: secretbox.seal(clean[name], purpose=secretbox.ACTION_SECRETS)
        for name in p.secret_names(kind)
        if clean.get(name) not in (None, "")
    }
    return p.masked(kind, clean), sealed


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


def action_params_clean(*, kind: str, params: dict[str, Any], secrets_allowed: bool = False) -> dict[str, Any]:
    """The parameters checked against the catalogue (console, API and bulk runs alike). A secret
    parameter (a password) is taken only for one action on one endpoint (``secrets_allowed``): not
    into a runbook or a bulk run, which keep their parameters to run them again."""
    try:
        clean = p.validate_params(kind, params)
    except p.ProtocolError as exc:
        raise SessionError(exc.detail) from None
    given = [name for name in p.secret_names(kind) if clean.get(name) not in (None, "")]
    if given and not secrets_allowed:
        raise SessionError(
            f"{', '.join(given)} is a secret: give it in a single action on one endpoint, not in a runbook or bulk run"
        )
    return clean


@retrying_atomic()
def action_request(
    *,
    actor: Actor,
    session: SupportSession,
    kind: str,
    params: dict[str, Any],
    expires_in: timedelta | None = None,
    batch: Batch | None = None,
    position: int = 0,
    bulk_run: BulkRun | None = None,
    hold: bool = False,
    conditions: dict[str, Any] | None = None,
    wake: str = WakeChoice.NOW,
    step_up: StepUp | None = None,
) -> Action:
    """Queue an action on the session's endpoint. It waits in the outbox while the endpoint is away,
    until ``expires_in`` (default from settings). ``hold`` queues it without sending (batches).
    ``wake``: NOW wakes the endpoint and sends at once; WAIT leaves its mode alone and sends at
    its next check-in (``action_wake`` turns a waiting action into NOW). ``step_up``: the recent
    check a risky kind needed (``endpoints.access.step_up_require``, done by the view), written to
    the transcript just before the action's own entry."""
    with acting_for(actor, session.tenant_id):
        if session.status != SessionStatus.OPEN:
            raise SessionError("this session is closed")
        if wake not in WakeChoice.values:
            raise SessionError(f"wake must be one of: {', '.join(WakeChoice.values)}")
        clean, sealed = action_secrets_seal(
            kind=kind, clean=action_params_clean(kind=kind, params=params, secrets_allowed=bulk_run is None)
        )
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
            raise SessionError(f"the expiry must be between a second and {MAX_EXPIRY.days} days")
        spec = p.ACTION_KINDS[kind]
        cfg = settings.CAISEY
        endpoint = Endpoint.objects.get(pk=session.endpoint_id)
        if endpoint.status != EndpointStatus.ENROLLED:
            raise SessionError("this endpoint was revoked; nothing more can run on it")
        expires_at = timezone.now() + (expires_in or configured_duration("ACTION_QUEUE_EXPIRY_S"))
        if step_up is not None:
            step_up_record(actor=actor, session=session, step_up=step_up, what=kind)
        action = Action.objects.create(
            tenant_id=session.tenant_id,
            session=session,
            endpoint=endpoint,
            batch=batch,
            batch_position=position,
            bulk_run=bulk_run,
            kind=kind,
            category=spec.category,
            params=clean,
            secrets=sealed,
            requested_by=actor_person(actor, doing="request an action"),
            timeout_s=spec.default_timeout,
            output_limit=cfg["ACTION_OUTPUT_LIMIT_BYTES"],
            expires_at=expires_at,
            wake=wake,
        )
        transcript_append(
            session=session,
            kind=K.ACTION_QUEUED,
            actor=actor_label(actor),
            action=action,
            data={
                "kind": kind,
                "category": spec.category,
                "params": clean,
                "expires_at": expires_at.isoformat(),
                "batch": str(batch.pk) if batch else None,
                "offline": presence_of(endpoint) == Presence.OFFLINE,
                "wake": wake,
            },
        )
        if not hold:
            policy = approval_policy_for(endpoint=endpoint)
            if policy.gates(spec.category):
                _await_approval([action], actor=actor, session=session, policy=policy)
            else:
                _dispatch(action, conditions=conditions)
        session_touch(session_id=session.pk)
        _action_event(action, "action.queued", {"kind": kind})
        return action


def _dispatch(action: Action, *, conditions: dict[str, Any] | None = None) -> None:
    """Put the action.run in the outbox; it stays queued until the agent acknowledges it.

    Asked of an online endpoint, it gets the normal retry budget and ends failed_to_deliver
    when the path is broken; queued for an offline endpoint, it waits for its return
    until the action's expiry.
    """
    endpoint = Endpoint.objects.get(pk=action.endpoint_id)
    message = outbox.outbox_enqueue(
        **action_run_message(action, endpoint=endpoint, offline=presence_of(endpoint) == Presence.OFFLINE)
    )
    Action.objects.filter(pk=action.pk).update(
        outbox_id=message.pk, conditions_at_dispatch=conditions or bridge_conditions(endpoint=endpoint)
    )
    action.outbox_id = message.pk
    if action.wake != WakeChoice.WAIT:
        endpoint_set_mode(endpoint=endpoint, mode=AgentMode.ACTIVE, reason="action queued")


def action_run_message(action: Action, *, endpoint: Endpoint, offline: bool) -> dict[str, Any]:
    """The outbox message (``outbox_enqueue``'s arguments) that sends the action to its endpoint."""
    wait = action.wake == WakeChoice.WAIT
    return {
        "endpoint": endpoint,
        "body": p.ActionRun(
            action_id=str(action.pk),
            kind=action.kind,
            category=action.category,
            # secrets as {"sealed": ...}: opened by the bridge as it writes the frame (bridge.outbox.frame_of)
            params={**action.params, **{name: {"sealed": value} for name, value in action.secrets.items()}},
            timeout=action.timeout_s,
            output_limit=action.output_limit,
            requested_by=action.requested_by.get_username(),
        ),
        "ref_type": "action",
        "ref_id": str(action.pk),
        "expires_at": action.expires_at,
        # Waiting for the next check-in may take a lazy interval or more: it keeps the budget of
        # an action that waits for an away endpoint (until the action's expiry).
        "max_attempts": 100_000 if offline or wait else None,
        "not_before": next_check_in(endpoint) if wait else None,
    }


def next_check_in(endpoint: Endpoint) -> datetime:
    """When the endpoint is next expected to beat, at the cadence it has now (its last beat plus
    its heartbeat interval); now when it is overdue or never seen (it takes the action at its
    next connect then: the hello claims everything waiting)."""
    now = timezone.now()
    if endpoint.last_seen_at is None:
        return now
    return max(now, endpoint.last_seen_at + timedelta(seconds=endpoint.heartbeat_interval))


@retrying_atomic()
def action_wake(*, actor: Actor, action: Action) -> None:
    """Wake now, for an action that was waiting for the endpoint's next check-in: the endpoint
    goes active and the action is sent at once (or as soon as it is approved)."""
    with acting_for(actor, action.tenant_id):
        action = _fresh(action)
        if action.wake != WakeChoice.WAIT:
            raise SessionError("this action already wakes its endpoint")
        if action.status not in (ActionStatus.QUEUED, ActionStatus.AWAITING_APPROVAL) or (
            action.status == ActionStatus.QUEUED and action.dispatched_at is not None
        ):
            raise SessionError(f"the action is already {action.get_status_display().lower()}")
        now = timezone.now()
        Action.objects.filter(pk=action.pk).update(wake=WakeChoice.NOW, woken_at=now)
        action.wake, action.woken_at = WakeChoice.NOW, now
        message = OutboxMessage.objects.filter(pk=action.outbox_id).first() if action.outbox_id else None
        sent_now = message is not None and outbox.outbox_hurry(message=message)
        endpoint_set_mode(endpoint=action.endpoint, mode=AgentMode.ACTIVE, reason="woken for an action")
        transcript_append(
            session=action.session,
            kind=K.ACTION_WOKEN,
            actor=actor_label(actor),
            action=action,
            data={"was": WakeChoice.WAIT.value, "status": action.status, "sent_now": sent_now},
        )
        session_touch(session_id=action.session_id)
        _action_event(action, "action.status", {"wake": WakeChoice.NOW.value})


@retrying_atomic()
def action_cancel(*, actor: Actor, action: Action) -> None:
    """Console wins: the action is cancelled now; a running process is told to stop."""
    with acting_for(actor, action.tenant_id):
        action = _fresh(action)
        previous = action.status
        try:
            moved = _move(action, ActionStatus.CANCELLED, by=actor_label(actor), finished_at=timezone.now())
        except IllegalTransition:
            raise SessionError(f"the action is already {action.get_status_display().lower()}") from None
        if not moved:
            raise SessionError(f"the action is already {action.status}")
        message = OutboxMessage.objects.filter(pk=action.outbox_id).first() if action.outbox_id else None
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
            kind=K.ACTION_CANCELLED,
            actor=actor_label(actor),
            action=action,
            data={"was": previous},
        )
        _action_event(action, "action.status")
        if previous == ActionStatus.AWAITING_APPROVAL:
            _cancel_covering_prompts(actor=actor, action=action)
        _continue_batch(action)


def _cancel_covering_prompts(*, actor: Actor, action: Action) -> None:
    """The technician cancelled an action that was waiting for approval: the question it asked
    (for a batch, the one prompt covering every step) is withdrawn, and held steps never run."""
    for prompt in prompting.prompts_open_covering(action=action):
        if prompting.prompt_record(
            prompt,
            PromptState.CANCELLED,
            party=PromptParty.CONSOLE,
            detail=f"its action was cancelled by {actor_label(actor)}",
        ):
            actions_stop_held(prompt=prompt, prompt_state=PromptState.CANCELLED)
            prompting.prompt_withdraw(prompt, reason=PromptState.CANCELLED)


@retrying_atomic()
def action_resend(*, actor: Actor, action: Action) -> None:
    """After failed_to_deliver: the same action.run (same event id) gets a fresh retry budget."""
    with acting_for(actor, action.tenant_id):
        action = _fresh(action)
        if action.status != ActionStatus.FAILED_TO_DELIVER:
            raise SessionError("only an action that could not be delivered can be resent")
        message = OutboxMessage.objects.get(pk=action.outbox_id)
        outbox.outbox_resend(actor=actor, message=message)
        _move(action, ActionStatus.QUEUED, by=actor_label(actor))
        transcript_append(
            session=action.session,
            kind=K.ACTION_RESENT,
            actor=actor_label(actor),
            action=action,
            data={"attempts_so_far": message.attempts},
        )
        _action_event(action, "action.status")


@retrying_atomic()
def batch_request(
    *,
    actor: Actor,
    session: SupportSession,
    items: list[tuple[str, dict[str, Any]]],
    step_up: StepUp | None = None,
    bulk_run: BulkRun | None = None,
    runbook_version: RunbookVersion | None = None,
) -> Batch:
    """Queue several actions to run in order; the next is sent when the previous one ends.
    ``step_up``: the recent check a batch with a risky kind needed, written once, first;
    ``bulk_run``: the run (a runbook's across endpoints) its actions belong to; ``runbook_version``:
    the runbook version the steps come from (services/runbooks.py)."""
    with acting_for(actor, session.tenant_id):
        if not items:
            raise SessionError("a batch needs at least one action")
        if len(items) > MAX_BATCH:
            raise SessionError(f"a batch holds at most {MAX_BATCH} actions")
        if step_up is not None:
            step_up_record(actor=actor, session=session, step_up=step_up, what="batch")
        batch = Batch.objects.create(
            tenant_id=session.tenant_id,
            session=session,
            created_by=actor_person(actor, doing="queue a batch"),
            runbook_version=runbook_version,
        )
        actions = [
            action_request(
                actor=actor,
                session=session,
                kind=kind,
                params=params,
                batch=batch,
                position=i,
                hold=True,
                bulk_run=bulk_run,
            )
            for i, (kind, params) in enumerate(items)
        ]
        transcript_append(
            session=session,
            kind=K.BATCH_QUEUED,
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
    actions: list[Action], *, actor: Actor, session: SupportSession, policy: Any, batch: Batch | None = None
) -> None:
    """Hold the actions until the end user approves; one prompt covers a whole batch."""
    for action in actions:
        _move(action, ActionStatus.AWAITING_APPROVAL, by=actor_label(Party.POLICY))
    what = "; ".join(_describe(a) for a in actions)
    prompting.prompt_issue(
        actor=actor,
        session=session,
        action=actions[0],
        batch=batch,
        title=prompting.prompt_title(
            actor=actor, session=session, what=actions[0].kind if len(actions) == 1 else f"{len(actions)} steps"
        ),
        detail=what,
        deadline_s=policy.response_deadline_s,
        allow_escalation=policy.allow_escalation,
    )


def _describe(action: Action) -> str:
    if action.kind == "shell":
        # The exact command and the shell that will run it (PowerShell and cmd read it differently).
        shell = action.params.get("shell") or "the endpoint's default shell"
        return f"shell command ({shell}): {action.params.get('command', '')}"
    params = ", ".join(f"{k}={v}" for k, v in action.params.items())
    return f"{p.ACTION_KINDS[action.kind].title}{' (' + params + ')' if params else ''}"


# --- what a prompt's outcome does to the actions it held (called by approvals) --------------------


def _held_by(prompt: Prompt) -> Iterable[Action]:
    if prompt.batch_id:
        return Action.objects.filter(batch_id=prompt.batch_id, status=ActionStatus.AWAITING_APPROVAL).order_by(
            "batch_position"
        )
    if prompt.action_id:
        return Action.objects.filter(pk=prompt.action_id, status=ActionStatus.AWAITING_APPROVAL)
    return Action.objects.none()


def actions_release_held(*, prompt: Prompt) -> None:
    """The prompt was approved: the actions it held go out (a batch's first step now, the rest in turn)."""
    for action in list(_held_by(prompt)):
        action_release(action=action, prompt=prompt)


def actions_stop_held(*, prompt: Prompt, prompt_state: str) -> None:
    """The prompt was denied, cancelled or expired: the actions it held never run."""
    for action in list(_held_by(prompt)):
        action_stop_unapproved(action=action, prompt_state=prompt_state)


def action_release(*, action: Action, prompt: Prompt) -> None:
    """The prompt was approved: the action (or the first step of its batch) goes out now."""
    if not _move(action, ActionStatus.QUEUED, by=prompt.state_changed_by):
        return
    transcript_append(
        session=action.session,
        kind=K.ACTION_APPROVED,
        actor=prompt.state_changed_by,
        action=action,
        data={"prompt": str(prompt.pk), "decided_by": prompt.decided_by},
    )
    _action_event(action, "action.status")
    first_waiting = (
        action.batch_id is None
        or not Action.objects.filter(batch_id=action.batch_id, batch_position__lt=action.batch_position)
        .exclude(status__in=ACTION_FINAL)
        .exists()
    )
    if first_waiting:
        _dispatch(action)


def action_stop_unapproved(*, action: Action, prompt_state: str) -> None:
    """Denied, cancelled or expired: the action never runs."""
    to = ActionStatus.EXPIRED if prompt_state == PromptState.EXPIRED else ActionStatus.CANCELLED
    by = actor_label(Party.POLICY)
    if _move(action, to, by=by, finished_at=timezone.now()):
        transcript_append(
            session=action.session,
            kind=K.of_action_status(to),
            actor=by,
            action=action,
            data={"why": f"approval prompt {prompt_state}"},
        )
        _action_event(action, "action.status")


def actions_rerun_approved(*, prompt: Prompt, by: str) -> list[Action]:
    """An approval honoured late (decided on the endpoint before the deadline, reported after it):
    the requests the prompt's expiry stopped run again as new actions linked to them (an expired
    action stays expired: a final state never reopens), a batch's steps in order."""
    stopped = actions_stopped_by_expiry(prompt=prompt)
    if not stopped:
        return []
    batch = None
    if prompt.batch_id:
        first = Batch.objects.get(pk=prompt.batch_id)
        batch = Batch.objects.create(
            tenant_id=prompt.tenant_id, session_id=prompt.session_id, created_by=first.created_by
        )
    now = timezone.now()
    reruns = []
    for old in stopped:
        if any(old.params.get(name) == p.SECRET_MASK for name in p.secret_names(old.kind)):
            continue  # its password was wiped when it expired: the technician asks again
        expires_at = now + (old.expires_at - old.created_at) if old.expires_at else None
        action = Action.objects.create(
            tenant_id=old.tenant_id,
            session_id=old.session_id,
            endpoint_id=old.endpoint_id,
            batch=batch,
            batch_position=old.batch_position,
            kind=old.kind,
            category=old.category,
            params=old.params,
            requested_by_id=old.requested_by_id,
            timeout_s=old.timeout_s,
            output_limit=old.output_limit,
            expires_at=expires_at,
            rerun_of=old,
        )
        common = {"rerun_of": str(old.pk), "prompt": str(prompt.pk)}
        transcript_append(
            session=prompt.session,
            kind=K.ACTION_QUEUED,
            actor=by,
            action=action,
            data={
                "kind": action.kind,
                "category": action.category,
                "params": action.params,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "batch": str(batch.pk) if batch else None,
                **common,
            },
        )
        transcript_append(
            session=prompt.session,
            kind=K.ACTION_APPROVED,
            actor=by,
            action=action,
            data={"decided_by": prompt.decided_by, "recorded_approval": True, **common},
        )
        _action_event(action, "action.queued", {"kind": action.kind})
        reruns.append(action)
    _dispatch(reruns[0])
    session_touch(session_id=prompt.session_id)
    return reruns


def _action_ended(action: Action) -> None:
    """What follows an action's end without the technician: the next step of its batch, or the
    close of the session a bulk run opened for it."""
    _continue_batch(action)
    _bulk_session_finish(action)
    bulk_progress_ring(action)


def bulk_progress_ring(action: Action) -> None:
    """An action of a bulk run ended or could not be delivered: the run's pages move their
    progress bar (one ``bulk.progress`` event for the tenant, after commit)."""
    if action.bulk_run_id is None:
        return
    notify.console_event(
        tenant_id=action.tenant_id,
        event="bulk.progress",
        payload={"bulk_run_id": str(action.bulk_run_id), **bulk_run_progress(run_id=action.bulk_run_id), "woken": []},
    )


def bulk_run_finish_check(action: Action) -> None:
    """The last action of a bulk run ended (every path to an end goes through ``_move``): the
    ``bulk_run.finished`` webhook event, in this transaction. The run's row is locked before the
    count, so of two last actions ending at once exactly one sees none left: the other waits for
    its commit and then counts it (read committed; each transaction moves the actions of one
    session only, so session, action, run is the one lock order). Without the lock, two last
    actions ending together wrote no event at all (tests/integrations/test_events_outside.py, the
    race test, on PostgreSQL: 0 events at its first attempt; with it, 1 in each of 5)."""
    if action.bulk_run_id is None:
        return
    # FOR NO KEY UPDATE: it serialises the run's last actions with each other but not with a
    # re-run being created, whose row points at this one (a foreign key takes FOR KEY SHARE).
    run = BulkRun.objects.select_for_update(no_key=True).filter(pk=action.bulk_run_id).first()
    if run is None:
        return
    # Any action not ended yet: this runs at every end of a run's action, so it stops at the first
    # such row instead of counting the whole run (a count per end made a fan-out to N quadratic).
    if Action.objects.filter(bulk_run=run).exclude(status__in=ACTION_FINAL).exists():
        return
    by_status = dict(
        Action.objects.filter(bulk_run=run).values_list("status").annotate(n=Count("id")).order_by("status")
    )
    event_emit(
        [
            OutsideEvent(
                tenant_id=run.tenant_id,
                type="bulk_run.finished",
                at=timezone.now(),
                data={
                    "bulk_run": {
                        "id": str(run.pk),
                        "kind": run.kind,
                        "reason": run.reason,
                        "created_at": run.created_at.isoformat(),
                        "rerun_of": str(run.rerun_of_id) if run.rerun_of_id else None,
                        "runbook_version": str(run.runbook_version_id) if run.runbook_version_id else None,
                    },
                    "actions": sum(by_status.values()),
                    "by_status": by_status,
                },
            )
        ]
    )


def _bulk_session_finish(action: Action) -> None:
    """A bulk run opens a session per endpoint for its action (or a runbook's steps); once they ended the
    session closes and the endpoint rests (thousands of woken agents would otherwise beat every
    10 s until the idle sweep). A session a technician went on working in stays open."""
    if action.bulk_run_id is None:
        return
    session = SupportSession.objects.select_for_update().get(pk=action.session_id)
    others = Action.objects.filter(session=session).exclude(pk=action.pk)
    # A runbook's run puts several steps of the run in the session: it closes after the last ends.
    if (
        session.status != SessionStatus.OPEN
        or others.exclude(bulk_run_id=action.bulk_run_id).exists()
        or others.exclude(status__in=sorted(ACTION_FINAL)).exists()
    ):
        return
    session_end(session=session, actor=Party.SYSTEM, reason="the bulk run's action on this endpoint ended")


def _continue_batch(action: Action) -> None:
    if action.batch_id is None:
        return
    following = (
        Action.objects.filter(
            batch_id=action.batch_id, batch_position__gt=action.batch_position, status=ActionStatus.QUEUED, outbox_id=""
        )
        .order_by("batch_position")
        .first()
    )
    if following is None:
        return
    if action.status == ActionStatus.CANCELLED:
        # Stopping one step of a batch stops the rest: they were meant to run in order.
        by = actor_label(Party.SYSTEM)
        for rest in Action.objects.filter(batch_id=action.batch_id, status=ActionStatus.QUEUED, outbox_id=""):
            _move(rest, ActionStatus.CANCELLED, by=by, finished_at=timezone.now())
            transcript_append(
                session=rest.session,
                kind=K.ACTION_CANCELLED,
                actor=by,
                action=rest,
                data={"why": "an earlier step of its batch was cancelled"},
            )
        return
    _dispatch(following)


# --- what the agent and the bridge report (the endpoint's tenant bound) ---------------------------


def _agent_action(endpoint: Endpoint, action_id: str) -> Action | None:
    """The action an agent reports on; only its own endpoint's actions are reachable."""
    try:
        return Action.objects.select_related("session").get(pk=action_id, endpoint_id=endpoint.pk)
    except (Action.DoesNotExist, ValueError, ValidationError):
        return None


def _reported_action(message: OutboxMessage) -> Action | None:
    return Action.objects.select_related("session").filter(pk=message.ref_id).first()


@retrying_atomic()
def action_delivered(*, message: OutboxMessage) -> None:
    with tenancy.bind(message.endpoint.tenant_id):
        action = _reported_action(message)
        if action is None or action.status not in (ActionStatus.QUEUED, ActionStatus.FAILED_TO_DELIVER):
            return
        by = actor_label(Party.BRIDGE)
        now = timezone.now()
        grace = configured_duration("ACTION_DEADLINE_GRACE_S")
        if _move(
            action,
            ActionStatus.DISPATCHED,
            by=by,
            dispatched_at=now,
            deadline_at=now + timedelta(seconds=action.timeout_s) + grace,
        ):
            transcript_append(
                session=action.session,
                kind=K.ACTION_DISPATCHED,
                actor=by,
                action=action,
                data={"attempts": message.attempts, "latency_ms": message.latency_ms},
            )
            _action_event(action, "action.status")


@retrying_atomic()
def action_undeliverable(*, message: OutboxMessage) -> None:
    with tenancy.bind(message.endpoint.tenant_id):
        action = _reported_action(message)
        if action is None or action.status != ActionStatus.QUEUED:
            return
        expired = action.expires_at is not None and action.expires_at <= timezone.now()
        to = ActionStatus.EXPIRED if expired else ActionStatus.FAILED_TO_DELIVER
        by = actor_label(Party.BRIDGE)
        if _move(action, to, by=by, finished_at=timezone.now() if expired else None):
            transcript_append(
                session=action.session,
                kind=K.of_action_status(to),
                actor=by,
                action=action,
                data={"attempts": message.attempts, "last_error": message.last_error},
            )
            _action_event(action, "action.status", {"attempts": message.attempts, "last_error": message.last_error})
            if expired:
                _action_ended(action)
            else:
                bulk_progress_ring(action)


@retrying_atomic()
def action_output_receive(*, endpoint: Endpoint, body: p.ActionOutput) -> None:
    with tenancy.bind(endpoint.tenant_id):
        _output_receive(endpoint, body)


def _output_receive(endpoint: Endpoint, body: p.ActionOutput) -> None:
    action = _agent_action(endpoint, body.action_id)
    if action is None:
        return
    by = actor_label(Party.AGENT)
    if body.stream == "status" and body.seq == 0:
        if action.status in (ActionStatus.QUEUED, ActionStatus.DISPATCHED, ActionStatus.FAILED_TO_DELIVER):
            if _move(action, ActionStatus.RUNNING, by=by, started_at=timezone.now()):
                transcript_append(session=action.session, kind=K.ACTION_RUNNING, actor=by, action=action)
                _action_event(action, "action.status")
        return
    if ActionOutput.objects.filter(action=action, seq=body.seq).exists():
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
    ActionOutput.objects.create(action=action, seq=body.seq, stream=body.stream, data=data)
    Action.objects.filter(pk=action.pk).update(
        output_bytes=action.output_bytes + len(data.encode()), output_truncated=truncated or action.output_truncated
    )
    transcript_append(
        session=action.session,
        kind=K.ACTION_OUTPUT,
        actor=by,
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


@retrying_atomic()
def action_result_receive(*, endpoint: Endpoint, body: p.ActionResult) -> None:
    with tenancy.bind(endpoint.tenant_id):
        _result_receive(endpoint, body)


def _result_receive(endpoint: Endpoint, body: p.ActionResult) -> None:
    action = _agent_action(endpoint, body.action_id)
    if action is None or body.status not in _RESULT_STATUS:
        return
    by = actor_label(Party.AGENT)
    conditions = bridge_conditions(endpoint=endpoint)
    data = {"status": body.status, "exit_code": body.exit_code, "error": body.error, "result": body.result}
    if action.is_final:
        # Console wins for cancellation, the deadline for an action given up: a late result is
        # recorded (transcript and card), the status stays.
        transcript_append(
            session=action.session,
            kind=K.ACTION_RESULT_IGNORED,
            actor=by,
            action=action,
            data={**data, "why": f"the action was already {action.status}"},
        )
        _late_result_record(action, body)
        return
    error = body.error
    if body.status == "refused":
        error = f"refused by the endpoint: {body.error}"
    started = datetime.fromtimestamp(body.started_at, tz=UTC) if body.started_at else action.started_at
    finished = datetime.fromtimestamp(body.finished_at, tz=UTC) if body.finished_at else timezone.now()
    to = _RESULT_STATUS[body.status]
    if not _move(
        action,
        to,
        by=by,
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
        kind=K.ACTION_RESULT,
        actor=by,
        action=action,
        data={**data, "error": error, "bridge": conditions},
    )
    _action_event(action, "action.status", {"exit_code": body.exit_code, "error": error})
    _action_ended(action)


def _late_result_record(action: Action, body: p.ActionResult) -> None:
    """Keep the first result that arrived after the action ended, for its card (the state stays)."""
    given_up = action.status in (ActionStatus.TIMED_OUT, ActionStatus.EXPIRED)
    after = "given up" if given_up else action.get_status_display().lower()
    late = {
        "status": body.status,
        "exit_code": body.exit_code,
        "error": body.error[:2000],
        "text": str((body.result or {}).get("text", ""))[:20_000],
        "at": timezone.now().isoformat(),
        "after": after,
    }
    if Action.objects.filter(pk=action.pk, late_result__isnull=True).update(late_result=late):
        _action_event(action, "action.status", {"late_result": body.status})


def action_deadline_sweep() -> int:
    """Actions in flight past their deadline end timed out: on an online endpoint that never
    answered, and on one that stayed unreachable (given up, saying since when; a result the agent
    reports later is recorded on the card and in the transcript without reviving the state)."""
    now = timezone.now()
    count = 0
    by = actor_label(Party.SYSTEM)
    with tenancy.system():
        overdue = list(
            Action.objects.filter(
                status__in=[ActionStatus.DISPATCHED, ActionStatus.RUNNING], deadline_at__lt=now
            ).select_related("endpoint", "session")
        )
        for action in overdue:
            why, updates, since = "no result by the deadline while the endpoint was online", {}, None
            connectivity = health.connectivity_of(action.endpoint, None, now)
            if connectivity.state == Presence.OFFLINE:
                since = connectivity.since
                at = f" since {timezone.localtime(since):%H:%M:%S}" if since else ""
                why = (
                    f"given up: the endpoint was unreachable{at} ({connectivity.reason}) "
                    "and no result came by the deadline"
                )
                updates["error"] = (
                    f"Given up: endpoint unreachable{at}; no result by the deadline. "
                    "A result it reports later is recorded here, not applied."
                )
            with transaction.atomic(), tenancy.bind(action.tenant_id):
                if _move(action, ActionStatus.TIMED_OUT, by=by, finished_at=now, **updates):
                    transcript_append(
                        session=action.session,
                        kind=K.ACTION_TIMED_OUT,
                        actor=by,
                        action=action,
                        data={"why": why, "unreachable_since": since.isoformat() if since else None},
                    )
                    _action_event(action, "action.status")
                    _action_ended(action)
                    count += 1
    return count
