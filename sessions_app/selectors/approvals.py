"""Reads for approval prompts: the console's prompt list and statistics, the API's approval shape.
Tenant-scoped through the default managers."""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from sessions_app.models import Prompt, PromptState, PromptTransition, SupportSession


def prompt_get(*, prompt_id: Any, session_id: Any = None) -> Prompt:
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


def approval_covering(*, action_id: Any, batch_id: Any = None) -> dict[str, Any] | None:
    """The latest prompt asking about an action (or about its batch), as the API shows it; None
    when its policy asked for none."""
    covering = Q(action_id=action_id) | Q(batch_id=batch_id) if batch_id else Q(action_id=action_id)
    prompt = Prompt.objects.filter(covering).order_by("-created_at").first()
    if prompt is None:
        return None
    return {
        "id": prompt.pk,
        "state": prompt.state,
        "state_changed_by": prompt.state_changed_by,
        "created_at": prompt.created_at,
        "deadline_at": prompt.deadline_at,
        "decided_at": prompt.decided_at,
        "decided_by": prompt.decided_by,
    }


def prompt_stats_for_group(*, client_group_id: Any, days: int = 30) -> dict[str, Any]:
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
