"""Runbooks: a tenant's named, ordered lists of catalogue actions with their parameters.

A runbook's steps live in its versions. Writing one validates every step against the catalogue
as a single request is validated (``actions.action_params_clean``); editing writes the next
version, and versions already written never change (``RunbookVersion.save`` refuses an update),
so a run can always say exactly what it ran. A run is recorded in the session's transcript
(``runbook.run``: the runbook, its version number and the steps) before the batch it queues.

Run on one endpoint, the steps are one batch under one approval (``actions.batch_request``);
across endpoints, a bulk run whose every endpoint gets that batch (``runbook_run_bulk``).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from bridge import notify
from caisey.actors import Actor, actor_label, actor_person
from caisey.errors import Conflict, Forbidden
from caisey.transactions import retrying_atomic
from caisey_agent import protocol as p
from endpoints.access import StepUp, acting_for
from endpoints.models import Endpoint
from sessions_app.kinds import TranscriptKind as K
from sessions_app.limits import (
    MAX_BATCH,
    MAX_BULK_ENDPOINTS,
    REASON_MAX_CHARS,
    configured_duration,
)
from sessions_app.limits import (
    RUNBOOK_DESCRIPTION_MAX_CHARS as DESCRIPTION_MAX_CHARS,
)
from sessions_app.limits import (
    RUNBOOK_NAME_MAX_CHARS as NAME_MAX_CHARS,
)
from sessions_app.models import Batch, BulkRun, Runbook, RunbookVersion, SupportSession
from sessions_app.selectors.bulk import bulk_run_progress
from sessions_app.services.actions import action_params_clean, batch_request
from sessions_app.services.sessions import SessionError, session_open, session_targets_fresh
from sessions_app.services.step_up import STEP_UP_KINDS, step_up_record
from sessions_app.services.transcript import transcript_append


def runbook_steps_clean(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps checked against the catalogue: ``[{"kind": ..., "params": {...}}]``, 1 to
    ``MAX_BATCH`` of them (a run is one batch). A bad step is refused naming its number."""
    if not isinstance(steps, list) or not steps:
        raise SessionError("a runbook needs at least one step")
    if len(steps) > MAX_BATCH:
        raise SessionError(f"a runbook holds at most {MAX_BATCH} steps (a run is one batch)")
    clean = []
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, dict) or not isinstance(step.get("params", {}), dict):
            raise SessionError(f"step {number}: a step is a kind and its parameters")
        kind = step.get("kind")
        if kind not in p.ACTION_KINDS:
            raise SessionError(f"step {number}: no such action: {kind!r}")
        try:
            params = action_params_clean(kind=kind, params=step.get("params") or {})
        except SessionError as exc:
            raise SessionError(f"step {number} ({kind}): {exc}") from None
        clean.append({"kind": kind, "params": params})
    return clean


def _name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise SessionError("a runbook needs a name")
    if len(name) > NAME_MAX_CHARS:
        raise SessionError(f"a runbook's name has at most {NAME_MAX_CHARS} characters")
    return name


def _version_write(*, actor: Actor, runbook: Runbook, number: int, description: str, steps: list) -> RunbookVersion:
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise SessionError(f"a description has at most {DESCRIPTION_MAX_CHARS} characters")
    return RunbookVersion.objects.create(
        tenant_id=runbook.tenant_id,
        runbook=runbook,
        number=number,
        name=runbook.name,
        description=description,
        steps=runbook_steps_clean(steps),
        created_by=actor_person(actor, doing="write a runbook"),
    )


@retrying_atomic()
def runbook_create(
    *, actor: Actor, tenant_id: Any, name: str, steps: list[dict[str, Any]], description: str = ""
) -> RunbookVersion:
    """A new runbook and its version 1 (operators only: ``acting_for``)."""
    with acting_for(actor, tenant_id):
        name = _name_clean(name)
        clean = runbook_steps_clean(steps)
        if Runbook.objects.filter(name__iexact=name).exists():
            raise Conflict(f"a runbook named {name!r} exists already")
        try:
            with transaction.atomic():
                runbook = Runbook.objects.create(
                    tenant_id=tenant_id, name=name, created_by=actor_person(actor, doing="write a runbook")
                )
        except IntegrityError:
            raise Conflict(f"a runbook named {name!r} exists already") from None
        return _version_write(actor=actor, runbook=runbook, number=1, description=description, steps=clean)


@retrying_atomic()
def runbook_edit(
    *, actor: Actor, runbook: Runbook, name: str, steps: list[dict[str, Any]], description: str = ""
) -> RunbookVersion:
    """Edit a runbook: its next version. The versions before stay as they were, runs name them."""
    with acting_for(actor, runbook.tenant_id):
        locked = Runbook.objects.select_for_update().get(pk=runbook.pk)  # one editor writes a number at a time
        name = _name_clean(name)
        clean = runbook_steps_clean(steps)
        if name != locked.name:
            if Runbook.objects.filter(name__iexact=name).exclude(pk=locked.pk).exists():
                raise Conflict(f"a runbook named {name!r} exists already")
            Runbook.objects.filter(pk=locked.pk).update(name=name)
            locked.name = name
        latest = RunbookVersion.objects.filter(runbook=locked).aggregate(n=Max("number"))["n"] or 0
        return _version_write(actor=actor, runbook=locked, number=latest + 1, description=description, steps=clean)


def _run_record(version: RunbookVersion, *, bulk_run: BulkRun | None = None) -> dict[str, Any]:
    return {
        "runbook": str(version.runbook_id),
        "runbook_version": str(version.pk),
        "name": version.name,
        "version": version.number,
        "steps": version.steps,
        "bulk_run": str(bulk_run.pk) if bulk_run is not None else None,
    }


@retrying_atomic()
def runbook_run_session(
    *, actor: Actor, session: SupportSession, version: RunbookVersion, bulk_run: BulkRun | None = None
) -> Batch:
    """Run a runbook version in a session: ``runbook.run`` in its transcript (which version, its
    steps), then its steps as one batch, under one approval where the policy gates any of them."""
    with acting_for(actor, session.tenant_id):
        if version.tenant_id != session.tenant_id:
            raise Forbidden("a runbook of another tenant")
        transcript_append(
            session=session,
            kind=K.RUNBOOK_RUN,
            actor=actor_label(actor),
            data=_run_record(version, bulk_run=bulk_run),
        )
        return batch_request(
            actor=actor,
            session=session,
            items=[(step["kind"], step["params"]) for step in version.steps],
            bulk_run=bulk_run,
            runbook_version=version,
        )


def runbook_needs_step_up(version: RunbookVersion) -> bool:
    """Whether a step is a risky kind (a shell command, a service restart): the view checks
    step-up first (``endpoints.access.step_up_require``), as for a single such request."""
    return any(step["kind"] in STEP_UP_KINDS for step in version.steps)


@retrying_atomic()
def runbook_run_endpoint(
    *, actor: Actor, endpoint: Endpoint, version: RunbookVersion, reason: str = "", step_up: StepUp | None = None
) -> Batch:
    """Open a session on the endpoint and run the runbook version in it; the step-up check a risky
    step needs is recorded in the session's transcript first."""
    if runbook_needs_step_up(version) and step_up is None:
        raise Forbidden("this runbook has a risky step: it needs a recent check that it is you")
    session = session_open(
        actor=actor, endpoint=endpoint, reason=reason or f"runbook: {version.name} (version {version.number})"
    )
    if step_up is not None:
        step_up_record(
            actor=actor, session=session, step_up=step_up, what=f"runbook {version.name} (version {version.number})"
        )
    return runbook_run_session(actor=actor, session=session, version=version)


@retrying_atomic()
def runbook_run_bulk(
    *,
    actor: Actor,
    endpoints: list[Endpoint],
    version: RunbookVersion,
    reason: str = "",
    rerun_of: BulkRun | None = None,
    step_up: StepUp | None = None,
) -> BulkRun:
    """A runbook version across endpoints (a client group): one bulk run; ``step_up``: the check the
    console asked for, written to every session of the run; each endpoint gets a
    session and the steps as a batch (``runbook_run_session``), so its results view groups them
    by outcome as any bulk run's. Endpoint by endpoint: statements grow with the endpoints, unlike
    ``bulk.bulk_run_start``'s set-based writes for a single diagnostic."""
    if not endpoints:
        raise SessionError("choose at least one endpoint")
    if len(endpoints) > MAX_BULK_ENDPOINTS:
        raise SessionError(f"a bulk run reaches at most {MAX_BULK_ENDPOINTS} endpoints")
    tenant_id = version.tenant_id
    with acting_for(actor, tenant_id):
        fresh = [e for _, e in sorted(session_targets_fresh(endpoints=endpoints, tenant_id=tenant_id).items())]
        why = (reason or f"runbook: {version.name} (version {version.number})")[:REASON_MAX_CHARS]
        run = BulkRun.objects.create(
            tenant_id=tenant_id,
            created_by=actor_person(actor, doing="start a bulk run"),
            kind="runbook",
            params={"runbook": version.name, "version": version.number},
            reason=why,
            expires_at=timezone.now() + configured_duration("ACTION_QUEUE_EXPIRY_S"),
            rerun_of=rerun_of,
            runbook_version=version,
        )
        for endpoint in fresh:
            session = session_open(actor=actor, endpoint=endpoint, reason=f"bulk run: {why}"[:REASON_MAX_CHARS])
            if step_up is not None:
                step_up_record(actor=actor, session=session, step_up=step_up, what="bulk run")
            runbook_run_session(actor=actor, session=session, version=version, bulk_run=run)
        notify.console_event(
            tenant_id=tenant_id,
            event="bulk.progress",
            payload={"bulk_run_id": str(run.pk), **bulk_run_progress(run=run), "woken": []},
        )
        return run
