"""Reads for actions and batches. Tenant-scoped through the default managers.

Console pages get models (templates walk them, output chunks prefetched); the API gets
plain data (``action_data``, ``action_detail``, ``batch_data``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from sessions_app.models import Action, ActionOutput, Batch, SupportSession
from sessions_app.selectors.approvals import approval_covering


def _with_output(qs: QuerySet[Action]) -> QuerySet[Action]:
    return qs.prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq")))


def session_actions(*, session: SupportSession) -> QuerySet[Action]:
    """A session's actions with their output (console page)."""
    return _with_output(Action.objects.filter(session=session).select_related("requested_by")).order_by("created_at")


def session_actions_list(*, session: SupportSession) -> QuerySet[Action]:
    """A session's actions, without output (API lists)."""
    return Action.objects.filter(session=session).select_related("requested_by").order_by("created_at")


def action_get(*, action_id: Any, session_id: Any = None) -> Action:
    qs = Action.objects.select_related("session", "endpoint", "requested_by")
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    return _with_output(qs).get(pk=action_id)


def action_output_text(*, action: Action) -> str:
    return "".join(chunk.data for chunk in action.chunks.all())


def action_data(action: Action) -> dict[str, Any]:
    """An action (API shape)."""
    return {
        "id": action.pk,
        "session": action.session_id,
        "endpoint": action.endpoint_id,
        "batch": action.batch_id,
        "batch_position": action.batch_position,
        "bulk_run": action.bulk_run_id,
        "kind": action.kind,
        "category": action.category,
        "params": action.params,
        "status": action.status,
        "status_changed_by": action.status_changed_by,
        "requested_by": action.requested_by.username,
        "created_at": action.created_at,
        "expires_at": action.expires_at,
        "timeout_s": action.timeout_s,
        "dispatched_at": action.dispatched_at,
        "started_at": action.started_at,
        "finished_at": action.finished_at,
        "deadline_at": action.deadline_at,
        "duration_s": action.duration_s,
        "exit_code": action.exit_code,
        "result": action.result,
        "error": action.error,
        "output_bytes": action.output_bytes,
        "truncated": action.output_truncated,
        "conditions_at_dispatch": action.conditions_at_dispatch,
        "conditions_at_completion": action.conditions_at_completion,
        "wake": action.wake,
        "woken_at": action.woken_at,
    }


def action_detail(*, action_id: Any) -> dict[str, Any]:
    """An action with its output and the approval prompt covering it (API shape)."""
    action = action_get(action_id=action_id)
    return {
        **action_data(action),
        "output": action_output_text(action=action),
        "approval": approval_covering(action_id=action.pk, batch_id=action.batch_id),
    }


def batch_data(*, batch: Batch) -> dict[str, Any]:
    """A batch with its steps in order (API shape)."""
    steps = Action.objects.filter(batch=batch).select_related("requested_by").order_by("batch_position")
    return {"id": batch.pk, "session": batch.session_id, "actions": [action_data(a) for a in steps]}
