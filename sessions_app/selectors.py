"""Reads for sessions, actions and transcripts. Tenant-scoped through the default managers."""

from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from sessions_app.models import Action, ActionOutput, ActionStatus, BulkRun, SessionStatus, SupportSession, TranscriptEntry


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
        done=Count("id", filter=Q(status__in=[ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.TIMED_OUT,
                                              ActionStatus.CANCELLED, ActionStatus.EXPIRED])),
        waiting=Count("id", filter=Q(status__in=[ActionStatus.QUEUED, ActionStatus.FAILED_TO_DELIVER])),
    )
    return counts
