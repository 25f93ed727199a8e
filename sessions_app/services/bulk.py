"""Bulk runs: one diagnostic across many endpoints, a session and an action per endpoint.

The endpoints are chosen by ``selectors.bulk.bulk_run_endpoints`` (console and API alike);
this service opens the sessions and queues the actions in one transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from bridge import notify, outbox
from bridge.services import bridge_conditions_many, endpoint_set_mode_many
from caisey.actors import Actor, actor_label, actor_person
from caisey.transactions import retrying_atomic
from caisey_agent import protocol as p
from endpoints.access import StepUp, acting_for
from endpoints.models import AgentMode, ApprovalPolicy, Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of
from endpoints.selectors import approval_policies_for
from sessions_app.kinds import TranscriptKind as K
from sessions_app.limits import (
    DEFAULT_BULK_EXPIRY,
    MAX_BULK_ENDPOINTS,
    MAX_EXPIRY,
    MIN_BULK_EXPIRY,
    REASON_MAX_CHARS,
)
from sessions_app.models import Action, BulkRun, SupportSession, TranscriptEntry, WakeChoice
from sessions_app.selectors.bulk import bulk_run_outcomes, bulk_run_progress
from sessions_app.services import runbooks
from sessions_app.services.actions import _await_approval, action_params_clean, action_run_message
from sessions_app.services.sessions import SessionError, session_targets_fresh
from sessions_app.services.step_up import step_up_entry
from sessions_app.services.transcript import transcript_begin, transcript_insert_many


@retrying_atomic()
def bulk_run_start(
    *,
    actor: Actor,
    endpoints: list[Endpoint],
    kind: str,
    params: dict[str, Any],
    reason: str = "",
    expires_in: timedelta = DEFAULT_BULK_EXPIRY,
    wake: str = WakeChoice.NOW,
    step_up: StepUp | None = None,
    rerun_of: BulkRun | None = None,
) -> BulkRun:
    """One diagnostic across many endpoints: a session per endpoint, offline ones stay queued.
    ``wake``=WAIT leaves every endpoint resting: each runs it at its next lazy check-in.
    ``step_up``: the recent check the console asked for (``endpoints.access.step_up_require``),
    written to each session's transcript after its opening and before the action.

    What ``session_open`` and ``action_request`` write for one endpoint, written for all at once
    in a number of statements that does not grow with the endpoints (bulk inserts, one set-based
    mode update): before, 1,000 endpoints took 14.9 s to commit (issue 12). Endpoints whose approval
    policy gates the action get their prompt one by one (``_await_approval``), as a single request
    does. Consoles get one ``bulk.progress`` event for the run (its progress and the endpoints it
    woke), not an ``action.queued`` and an ``endpoint.presence`` event per endpoint."""
    if not endpoints:
        raise SessionError("choose at least one endpoint")
    if len(endpoints) > MAX_BULK_ENDPOINTS:
        raise SessionError(f"a bulk run reaches at most {MAX_BULK_ENDPOINTS} endpoints")
    if wake not in WakeChoice.values:
        raise SessionError(f"wake must be one of: {', '.join(WakeChoice.values)}")
    if not MIN_BULK_EXPIRY <= expires_in <= MAX_EXPIRY:
        raise SessionError(f"the expiry must be between a minute and {MAX_EXPIRY.days} days")
    tenant_id = endpoints[0].tenant_id
    with acting_for(actor, tenant_id):
        fresh = session_targets_fresh(endpoints=endpoints, tenant_id=tenant_id)
        clean = action_params_clean(kind=kind, params=params)
        spec = p.ACTION_KINDS[kind]
        # Fresh rows, taken in primary-key order: the order every writer of several endpoint rows
        # takes them in (endpoints/services.py endpoint_touch_many).
        targets = [fresh[e.pk] for e in sorted(endpoints, key=lambda e: e.pk)]
        now = timezone.now()
        expires_at = now + expires_in
        run = BulkRun.objects.create(
            tenant_id=tenant_id,
            created_by=actor_person(actor, doing="start a bulk run"),
            kind=kind,
            params=clean,
            reason=reason[:REASON_MAX_CHARS],
            expires_at=expires_at,
            rerun_of=rerun_of,
        )
        conditions = bridge_conditions_many(endpoint_ids=list(fresh), endpoints=list(fresh.values()))
        policies = approval_policies_for(endpoints=list(fresh.values()))
        offline = {pk: presence_of(e, now) == Presence.OFFLINE for pk, e in fresh.items()}
        label = actor_label(actor)
        checked = [step_up_entry(actor=actor, step_up=step_up, what="bulk run")] if step_up is not None else []
        opened_by = actor_person(actor, doing="open a session")
        requested_by = actor_person(actor, doing="request an action")
        sessions: list[SupportSession] = []
        actions: list[Action] = []
        entries: list[TranscriptEntry] = []
        gated: list[tuple[Action, ApprovalPolicy]] = []
        sendable: list[tuple[Action, ApprovalPolicy]] = []
        for endpoint in targets:
            session = SupportSession(
                tenant_id=tenant_id,
                endpoint=endpoint,
                opened_by=opened_by,
                reason=f"bulk run: {reason or kind}"[:REASON_MAX_CHARS],
                opened_offline=offline[endpoint.pk],
                connectivity=conditions[endpoint.pk]["connectivity"],
            )
            action = Action(
                tenant_id=tenant_id,
                session=session,
                endpoint=endpoint,
                bulk_run=run,
                kind=kind,
                category=spec.category,
                params=clean,
                requested_by=requested_by,
                timeout_s=spec.default_timeout,
                output_limit=settings.CAISEY["ACTION_OUTPUT_LIMIT_BYTES"],
                expires_at=expires_at,
                wake=wake,
            )
            entries += transcript_begin(
                session=session,
                entries=[
                    {
                        "kind": K.SESSION_OPENED,
                        "actor": label,
                        "data": {
                            "reason": session.reason,
                            "endpoint": endpoint.hostname,
                            "offline": offline[endpoint.pk],
                            "bridge": conditions[endpoint.pk],
                            "machine_context": endpoint.machine_context,
                            "wake": wake == WakeChoice.NOW,
                        },
                    },
                    *checked,
                    {
                        "kind": K.ACTION_QUEUED,
                        "actor": label,
                        "action": action,
                        "data": {
                            "kind": kind,
                            "category": spec.category,
                            "params": clean,
                            "expires_at": expires_at.isoformat(),
                            "batch": None,
                            "offline": offline[endpoint.pk],
                            "wake": wake,
                        },
                    },
                ],
            )
            sessions.append(session)
            actions.append(action)
            policy = policies[endpoint.pk]
            (gated if policy.gates(spec.category) else sendable).append((action, policy))
        SupportSession.objects.insert_many(sessions)
        # The wake first, as session_open does before action_request: its mode.set queues ahead.
        woken = []
        if wake == WakeChoice.NOW:
            woken = endpoint_set_mode_many(
                endpoints=list(fresh.values()), mode=AgentMode.ACTIVE, reason="session opened"
            )
        sent = outbox.outbox_enqueue_many(
            messages=[
                action_run_message(action, endpoint=action.endpoint, offline=offline[action.endpoint_id])
                for action, _ in sendable
            ]
        )
        for (action, _), message in zip(sendable, sent, strict=True):
            action.outbox_id = message.pk
            action.conditions_at_dispatch = conditions[action.endpoint_id]
        Action.objects.insert_many(actions)
        transcript_insert_many(entries)
        for action, policy in gated:  # a prompt each: as action_request asks for one endpoint
            _await_approval([action], actor=actor, session=action.session, policy=policy)
        notify.console_event(
            tenant_id=tenant_id,
            event="bulk.progress",
            # The endpoints it woke (now active), in place of a presence event for each.
            payload={"bulk_run_id": str(run.pk), **bulk_run_progress(run=run), "woken": [str(e.pk) for e in woken]},
        )
        return run


def bulk_run_rerun(*, actor: Actor, run: BulkRun, reason: str = "", step_up: StepUp | None = None) -> BulkRun:
    """Run again, as a new bulk run linked to ``run`` (``rerun_of``), on the endpoints where it
    failed, timed out or never arrived (``selectors.bulk.RERUN_STATUSES``): the same diagnostic
    and parameters, or the same runbook version. Endpoints revoked since are left out; nothing to
    re-run is refused. ``step_up``: the check the console asked for, as for any bulk run."""
    with acting_for(actor, run.tenant_id):
        wanted = bulk_run_outcomes(run=run)["rerun_endpoint_ids"]
        endpoints = list(
            Endpoint.objects.filter(pk__in=wanted, status=EndpointStatus.ENROLLED)
            .select_related("client_group")
            .order_by("pk")
        )
        if not endpoints:
            raise SessionError("nothing to re-run: no endpoint failed, timed out or missed this run")
        why = reason or f"{run.reason or run.kind} (re-run on its failures)"
        first = Action.objects.filter(bulk_run=run).order_by("created_at").first()
        wake = first.wake if first is not None else WakeChoice.NOW
        if run.runbook_version is not None:
            return runbooks.runbook_run_bulk(
                actor=actor, endpoints=endpoints, version=run.runbook_version, reason=why, rerun_of=run, step_up=step_up
            )
        return bulk_run_start(
            actor=actor,
            endpoints=endpoints,
            kind=run.kind,
            params=run.params,
            reason=why,
            wake=wake,
            rerun_of=run,
            step_up=step_up,
        )
