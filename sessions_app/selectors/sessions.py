"""Reads for sessions, actions and transcripts. Tenant-scoped through the default managers."""

from __future__ import annotations

import statistics
from datetime import timedelta

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from sessions_app.models import (
    Action,
    ActionOutput,
    ActionStatus,
    BulkRun,
    Prompt,
    PromptState,
    PromptTransition,
    SessionStatus,
    SupportSession,
    TranscriptEntry,
)


def session_list(*, status: str = "", endpoint_id=None, opened_by=None) -> QuerySet[SupportSession]:
    qs = SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by")
    if status:
        qs = qs.filter(status=status)
    if endpoint_id:
        qs = qs.filter(endpoint_id=endpoint_id)
    if opened_by is not None:
        qs = qs.filter(opened_by=opened_by)
    return qs.annotate(action_count=Count("actions")).order_by("-opened_at")


def session_get(*, session_id) -> SupportSession:
    return SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by").get(pk=session_id)


def session_actions(*, session: SupportSession) -> QuerySet[Action]:
    return (
        Action.objects.filter(session=session)
        .select_related("requested_by")
        .prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq")))
        .order_by("created_at")
    )


def action_get(*, action_id, session_id=None) -> Action:
    qs = Action.objects.select_related("session", "endpoint", "requested_by")
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    return qs.prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq"))).get(pk=action_id)


def action_output_text(*, action: Action) -> str:
    return "".join(chunk.data for chunk in action.chunks.all())


def session_transcript(*, session: SupportSession) -> QuerySet[TranscriptEntry]:
    return TranscriptEntry.objects.filter(session=session).order_by("index")


def open_sessions_for_endpoint(*, endpoint_id) -> QuerySet[SupportSession]:
    return session_list(status=SessionStatus.OPEN, endpoint_id=endpoint_id)


def bulk_run_get(*, run_id) -> BulkRun:
    return BulkRun.objects.select_related("created_by").get(pk=run_id)


def bulk_run_rows(*, run: BulkRun) -> list[Action]:
    return list(
        Action.objects.filter(bulk_run=run)
        .select_related("endpoint", "endpoint__client_group", "session")
        .prefetch_related(Prefetch("chunks", queryset=ActionOutput.objects.order_by("seq")))
        .order_by("endpoint__hostname")
    )


def bulk_run_progress(*, run: BulkRun) -> dict[str, int]:
    counts = Action.objects.filter(bulk_run=run).aggregate(
        total=Count("id"),
        done=Count(
            "id",
            filter=Q(
                status__in=[
                    ActionStatus.SUCCEEDED,
                    ActionStatus.FAILED,
                    ActionStatus.TIMED_OUT,
                    ActionStatus.CANCELLED,
                    ActionStatus.EXPIRED,
                ]
            ),
        ),
        waiting=Count("id", filter=Q(status__in=[ActionStatus.QUEUED, ActionStatus.FAILED_TO_DELIVER])),
    )
    return counts


def prompt_get(*, prompt_id, session_id=None) -> Prompt:
    qs = Prompt.objects.select_related("session", "endpoint", "endpoint__client_group", "tenant", "requested_by")
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    return qs.get(pk=prompt_id)


def session_prompts(*, session: SupportSession) -> QuerySet[Prompt]:
    return (
        Prompt.objects.filter(session=session)
        .select_related("requested_by", "action")
        .prefetch_related(Prefetch("history", queryset=PromptTransition.objects.order_by("at", "id")))
        .order_by("-created_at")
    )


def prompt_stats_for_group(*, client_group_id, days: int = 30) -> dict:
    """How long this client's users take to decide, and how many prompts expire."""
    since = timezone.now() - timedelta(days=days)
    ended = Prompt.objects.filter(
        endpoint__client_group_id=client_group_id,
        created_at__gte=since,
        state__in=[PromptState.APPROVED, PromptState.DENIED, PromptState.EXPIRED],
    )
    decided = [
        (p.decided_at - p.created_at).total_seconds()
        for p in ended.filter(state__in=[PromptState.APPROVED, PromptState.DENIED]).only("created_at", "decided_at")
        if p.decided_at
    ]
    total = ended.count()
    expired = ended.filter(state=PromptState.EXPIRED).count()
    return {
        "decided": len(decided),
        "median_s": statistics.median(decided) if decided else None,
        "p90_s": statistics.quantiles(decided, n=10, method="inclusive")[8]
        if len(decided) >= 2
        else (decided[0] if decided else None),
        "expired": expired,
        "expired_share": (expired / total) if total else None,
        "days": days,
    }


def unanswered_by_hour(*, endpoint_id, days: int = 30) -> list[int]:
    """Prompts that expired unanswered on this endpoint, by hour of day (server time zone)."""
    since = timezone.now() - timedelta(days=days)
    hours = [0] * 24
    for created in Prompt.objects.filter(
        endpoint_id=endpoint_id, state=PromptState.EXPIRED, created_at__gte=since
    ).values_list("created_at", flat=True):
        hours[timezone.localtime(created).hour] += 1
    return hours
