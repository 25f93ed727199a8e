"""Reads for bulk runs, and the one rule that chooses a bulk run's endpoints (console and API alike).

The rule: endpoints chosen one by one must all be enrolled endpoints of the caller's tenant;
an unknown id (another tenant's is unknown too) or a revoked endpoint refuses the whole run
with a message naming them, nothing is silently dropped. A client group (slug or name)
targets its enrolled endpoints, and must have some.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from caisey.errors import Rejected
from endpoints.models import ClientGroup, Endpoint, EndpointStatus
from sessions_app.limits import MAX_BULK_ENDPOINTS
from sessions_app.models import ACTION_FINAL, Action, ActionOutput, ActionStatus, BulkRun
from sessions_app.selectors.actions import action_output_text
from sessions_app.selectors.sessions import endpoint_ref


class BulkChoiceRejected(Rejected):
    """The endpoints chosen for a bulk run cannot all be reached; ``field`` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _names(values: Sequence[str]) -> str:
    shown = ", ".join(values[:10])
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")


def bulk_run_endpoints(*, endpoint_ids: Sequence[Any] = (), client_group: str = "") -> list[Endpoint]:
    """The endpoints of a bulk run, chosen one by one (``endpoint_ids``) or by client group
    (``client_group``: slug or name); raises ``BulkChoiceRejected`` when the choice is refused."""
    if endpoint_ids and client_group:
        raise BulkChoiceRejected("client_group", "give either a client group or endpoints, not both")
    if client_group:
        group = ClientGroup.objects.filter(Q(slug=client_group) | Q(name__iexact=client_group)).first()
        if group is None:
            raise BulkChoiceRejected("client_group", "no such client group")
        endpoints = list(
            Endpoint.objects.select_related("client_group")
            .filter(client_group=group, status=EndpointStatus.ENROLLED)
            .order_by("hostname")
        )
        if not endpoints:
            raise BulkChoiceRejected("client_group", "the client group has no enrolled endpoints")
        return endpoints
    if not endpoint_ids:
        raise BulkChoiceRejected("endpoints", "choose at least one endpoint")
    if len(endpoint_ids) > MAX_BULK_ENDPOINTS:
        raise BulkChoiceRejected("endpoints", f"a bulk run reaches at most {MAX_BULK_ENDPOINTS} endpoints")
    wanted: dict[uuid.UUID, str] = {}
    malformed = []
    for value in endpoint_ids:
        try:
            wanted.setdefault(uuid.UUID(str(value)), str(value))
        except ValueError:
            malformed.append(str(value))
    found = {e.pk: e for e in Endpoint.objects.select_related("client_group").filter(pk__in=list(wanted))}
    missing = malformed + [text for pk, text in wanted.items() if pk not in found]
    if missing:
        raise BulkChoiceRejected("endpoints", f"no such endpoint: {_names(missing)}")
    endpoints = [found[pk] for pk in wanted]
    revoked = [e.hostname for e in endpoints if e.status != EndpointStatus.ENROLLED]
    if revoked:
        raise BulkChoiceRejected("endpoints", f"revoked: {_names(revoked)}")
    return endpoints


def bulk_run_list() -> QuerySet[BulkRun]:
    return BulkRun.objects.select_related("created_by").order_by("-created_at")


def bulk_run_get(*, run_id: Any) -> BulkRun:
    return BulkRun.objects.select_related("created_by", "rerun_of", "runbook_version", "runbook_version__runbook").get(
        pk=run_id
    )


def bulk_run_rows(*, run: BulkRun) -> list[Action]:
    """The run's actions, by endpoint and, for a runbook's run, in the order of its steps."""
    return list(
        Action.objects.filter(bulk_run=run)
        .select_related("endpoint", "endpoint__client_group", "session")
        .prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq")))
        .order_by("endpoint__hostname", "endpoint_id", "batch_position", "created_at")
    )


# --- results grouped by outcome ---------------------------------------------------------------

#: What a re-run of the failures reaches: the endpoints where a step failed, timed out, or never
#: reached the endpoint (undelivered, or expired while waiting for it).
RERUN_STATUSES = frozenset(
    {ActionStatus.FAILED, ActionStatus.TIMED_OUT, ActionStatus.FAILED_TO_DELIVER, ActionStatus.EXPIRED}
)
# An endpoint with several steps (a runbook's run) takes the outcome of its first step that did not
# succeed, in this order of precedence: what went wrong first, then what has not ended yet.
_PRECEDENCE = [
    ActionStatus.FAILED,
    ActionStatus.TIMED_OUT,
    ActionStatus.FAILED_TO_DELIVER,
    ActionStatus.EXPIRED,
    ActionStatus.CANCELLED,
    ActionStatus.AWAITING_APPROVAL,
    ActionStatus.QUEUED,
    ActionStatus.DISPATCHED,
    ActionStatus.RUNNING,
    ActionStatus.SUCCEEDED,
]
_PHRASES = {
    ActionStatus.FAILED: "failed",
    ActionStatus.TIMED_OUT: "timed out",
    ActionStatus.FAILED_TO_DELIVER: "undelivered",
    ActionStatus.EXPIRED: "expired before reaching the endpoint",
    ActionStatus.CANCELLED: "cancelled",
    ActionStatus.AWAITING_APPROVAL: "waiting for approval",
    ActionStatus.QUEUED: "waiting offline",
    ActionStatus.DISPATCHED: "sent",
    ActionStatus.RUNNING: "running",
}


def output_normalised(text: str) -> str:
    """Output as compared between endpoints: line endings unified, trailing spaces and blank lines
    at either end dropped (``\r\n`` from one endpoint and ``\n`` from another is the same output)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def action_output(action: Action) -> str:
    """What the action printed: its streamed output (a command's stdout and stderr), else the
    agent's readable result text (a diagnostic's). Not a command's result text: it carries its
    timing ("exit code 3 after 0.006 s"), so no two endpoints would ever share an output."""
    streamed = action_output_text(action=action)
    if streamed:
        return streamed
    text = (action.result or {}).get("text") if isinstance(action.result, dict) else None
    return text if isinstance(text, str) else ""


def output_digest(text: str) -> str:
    return hashlib.sha256(output_normalised(text).encode()).hexdigest()[:16]


def _endpoint_outcome(steps: list[Action]) -> dict[str, Any]:
    statuses = {a.status for a in steps}
    status = next(s for s in _PRECEDENCE if s in statuses)
    ended = all(a.is_final for a in steps)
    outputs = [action_output(a) for a in steps]
    digest = output_digest("\n\x1e\n".join(outputs)) if ended else ""
    exit_codes = tuple(a.exit_code for a in steps)
    return {"status": status, "exit_codes": exit_codes, "digest": digest, "output": "\n\n".join(outputs)}


def bulk_run_outcomes(*, run: BulkRun, rows: list[Action] | None = None) -> dict[str, Any]:
    """The run's endpoints grouped by outcome: status, exit code(s) and identical (normalised)
    output, biggest group first, each with its endpoints for the drill-down; a summary in words
    ("812 same output, 150 differ, 38 waiting offline") and the endpoints a re-run would reach.
    Plain data; the queries are ``bulk_run_rows``'s, whatever the number of endpoints."""
    rows = bulk_run_rows(run=run) if rows is None else rows
    by_endpoint: dict[Any, list[Action]] = {}
    for action in rows:
        by_endpoint.setdefault(action.endpoint_id, []).append(action)
    groups: dict[tuple, dict[str, Any]] = {}
    rerun: list[Any] = []
    for steps in by_endpoint.values():
        outcome = _endpoint_outcome(steps)
        key = (outcome["status"], outcome["exit_codes"], outcome["digest"])
        group = groups.get(key)
        if group is None:
            status = outcome["status"]
            group = groups[key] = {
                "key": hashlib.sha256(repr(key).encode()).hexdigest()[:12],
                "status": status,
                "status_label": ActionStatus(status).label,
                "phrase": _PHRASES.get(status, ""),
                "exit_codes": list(outcome["exit_codes"]),
                "exit_code": outcome["exit_codes"][0] if len(outcome["exit_codes"]) == 1 else None,
                "digest": outcome["digest"],
                "sample_output": outcome["output"][:4000],
                "rerunnable": status in RERUN_STATUSES,
                "endpoints": [],
            }
        endpoint = steps[0].endpoint
        group["endpoints"].append(
            {
                "endpoint_id": endpoint.pk,
                "hostname": endpoint.hostname,
                "client_group": endpoint.client_group.name if endpoint.client_group_id else "",
                "session_id": steps[0].session_id,
                "action_ids": [a.pk for a in steps],
                "error": next((a.error for a in steps if a.error), ""),
            }
        )
        if outcome["status"] in RERUN_STATUSES:
            rerun.append(endpoint.pk)
    ordered = sorted(groups.values(), key=lambda g: (-len(g["endpoints"]), g["status"], g["key"]))
    for group in ordered:
        group["count"] = len(group["endpoints"])
    return {
        "groups": ordered,
        "summary": _summary(ordered),
        "rerun_endpoint_ids": rerun,
        "endpoints": len(by_endpoint),
    }


def _summary(groups: list[dict[str, Any]]) -> list[str]:
    """Phrases a technician reads at a glance: the biggest set of endpoints that succeeded with
    one output is "same output", the other successes "differ"; the rest by what happened."""
    succeeded = [g for g in groups if g["status"] == ActionStatus.SUCCEEDED]
    phrases = []
    if succeeded:
        phrases.append(f"{succeeded[0]['count']} same output")
        differ = sum(g["count"] for g in succeeded[1:])
        if differ:
            phrases.append(f"{differ} differ")
    counts: dict[str, int] = {}
    for g in groups:
        if g["status"] != ActionStatus.SUCCEEDED:
            counts[g["status"]] = counts.get(g["status"], 0) + g["count"]
    phrases += [f"{counts[s]} {_PHRASES[s]}" for s in _PRECEDENCE if s in counts]
    return phrases


def bulk_run_export_rows(*, run: BulkRun) -> list[dict[str, Any]]:
    """A row per action (per step, for a runbook's run), with its outcome group: the CSV and JSON exports."""
    rows = bulk_run_rows(run=run)
    outcomes = bulk_run_outcomes(run=run, rows=rows)
    group_of = {e["endpoint_id"]: g for g in outcomes["groups"] for e in g["endpoints"]}
    exported = []
    for row in rows:
        output = action_output(row)  # read once: the digest and the cell
        exported.append(
            {
                "endpoint_id": str(row.endpoint_id),
                "hostname": row.endpoint.hostname,
                "client_group": row.endpoint.client_group.name if row.endpoint.client_group_id else "",
                "session_id": str(row.session_id),
                "action_id": str(row.pk),
                "step": row.batch_position + 1,
                "kind": row.kind,
                "status": row.status,
                "exit_code": row.exit_code,
                "error": row.error,
                "outcome_group": group_of[row.endpoint_id]["key"],
                "output_sha256_16": output_digest(output) if row.is_final else "",
                "started_at": row.started_at.isoformat() if row.started_at else None,
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
                "output": output,
            }
        )
    return exported


def bulk_run_progress(*, run: BulkRun | None = None, run_id: Any = None) -> dict[str, int]:
    """How far a run is: its actions, those ended, those waiting for their endpoint."""
    return Action.objects.filter(bulk_run_id=run.pk if run is not None else run_id).aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status__in=sorted(ACTION_FINAL))),
        waiting=Count("id", filter=Q(status__in=[ActionStatus.QUEUED, ActionStatus.FAILED_TO_DELIVER])),
    )


def bulk_run_data(run: BulkRun, *, rows: bool) -> dict[str, Any]:
    """A bulk run with its progress and, when ``rows``, a row per endpoint (API shape)."""
    data: dict[str, Any] = {
        "id": run.pk,
        "kind": run.kind,
        "params": run.params,
        "reason": run.reason,
        "created_by": run.created_by.username,
        "created_at": run.created_at,
        "expires_at": run.expires_at,
        "rerun_of": run.rerun_of_id,
        "runbook_version": run.runbook_version_id,
        "progress": bulk_run_progress(run=run),
    }
    if rows:
        data["rows"] = [
            {
                "endpoint": endpoint_ref(row.endpoint),
                "session": row.session_id,
                "action": row.pk,
                "status": row.status,
                "exit_code": row.exit_code,
                "error": row.error,
                "result": row.result,
                "output": action_output_text(action=row),
                "truncated": row.output_truncated,
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "duration_s": row.duration_s,
            }
            for row in bulk_run_rows(run=run)
        ]
    return data
