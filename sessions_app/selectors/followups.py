"""Reads for follow-ups: the list per technician or for the tenant, what is due, and the links
between a session and its follow-ups. Tenant-scoped through the default managers."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from caisey.errors import Rejected
from sessions_app.models import FollowUp, FollowUpStatus, SupportSession

FOLLOW_UP_STATUS_FILTERS = ("scheduled", "due", "opened", "all")


class UnknownFilter(Rejected):
    """A list filter that does not exist (400 in the API, a message in the console)."""


def follow_up_list(*, assigned_to_id: Any = None, status: str = "scheduled") -> QuerySet[FollowUp]:
    """Follow-ups of the tenant (or of one technician): ``scheduled`` (soonest first), ``due``
    (scheduled and past their time), ``opened`` (latest first) or ``all``."""
    if status not in FOLLOW_UP_STATUS_FILTERS:
        raise UnknownFilter(f"status must be one of: {', '.join(FOLLOW_UP_STATUS_FILTERS)}")
    qs = FollowUp.objects.select_related(
        "session", "endpoint", "endpoint__client_group", "assigned_to", "opened_session"
    )
    if assigned_to_id is not None:
        qs = qs.filter(assigned_to_id=assigned_to_id)
    if status in ("scheduled", "due"):
        qs = qs.filter(status=FollowUpStatus.SCHEDULED).order_by("due_at")
        if status == "due":
            qs = qs.filter(due_at__lte=timezone.now())
        return qs
    if status == "opened":
        return qs.filter(status=FollowUpStatus.OPENED).order_by("-opened_at")
    return qs.order_by("-due_at")


def follow_ups_due_count(*, assigned_to_id: Any) -> int:
    """How many of this technician's follow-ups are due and not opened (the console's reminder)."""
    return FollowUp.objects.filter(
        assigned_to_id=assigned_to_id, status=FollowUpStatus.SCHEDULED, due_at__lte=timezone.now()
    ).count()


def follow_up_get(*, follow_up_id: Any) -> FollowUp:
    return FollowUp.objects.select_related("session", "endpoint", "assigned_to", "opened_session").get(pk=follow_up_id)


def session_follow_ups(*, session: SupportSession) -> dict[str, Any]:
    """A session's links: the follow-ups scheduled from it, and the follow-up it opened from."""
    scheduled = list(
        FollowUp.objects.filter(session=session).select_related("assigned_to", "opened_session").order_by("due_at")
    )
    origin = FollowUp.objects.filter(opened_session=session).select_related("session").first()
    return {"scheduled": scheduled, "follow_up_of": origin}


def follow_up_data(follow_up: FollowUp) -> dict[str, Any]:
    """A follow-up (API shape)."""
    return {
        "id": follow_up.pk,
        "session": follow_up.session_id,
        "endpoint": {"id": follow_up.endpoint_id, "hostname": follow_up.endpoint.hostname},
        "assigned_to": follow_up.assigned_to.get_username(),
        "due_at": follow_up.due_at,
        "due": follow_up.is_due,
        "note": follow_up.note,
        "approved_by_user": follow_up.approved_prompt_id is not None,
        "status": follow_up.status,
        "reminded_at": follow_up.reminded_at,
        "opened_session": follow_up.opened_session_id,
        "opened_at": follow_up.opened_at,
        "created_at": follow_up.created_at,
    }
