"""Reads for bulk runs, and the one rule that chooses a bulk run's endpoints (console and API alike).

The rule: endpoints chosen one by one must all be enrolled endpoints of the caller's tenant;
an unknown id (another tenant's is unknown too) or a revoked endpoint refuses the whole run
with a message naming them, nothing is silently dropped. A client group (slug or name)
targets its enrolled endpoints, and must have some.
"""

from __future__ import annotations

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
    return BulkRun.objects.select_related("created_by").get(pk=run_id)


def bulk_run_rows(*, run: BulkRun) -> list[Action]:
    return list(
        Action.objects.filter(bulk_run=run)
        .select_related("endpoint", "endpoint__client_group", "session")
        .prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq")))
        .order_by("endpoint__hostname")
    )


def bulk_run_progress(*, run: BulkRun) -> dict[str, int]:
    return Action.objects.filter(bulk_run=run).aggregate(
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
