"""How the people at an endpoint answer approval prompts: misses by hour of day, the first prompt
of a session against later ones, and the median time to decide; per endpoint and per user.

Who "the user" of a prompt is, most truthful first:
1. ``decided_by`` when the endpoint's runtime reported the decision: the account that decided
   (the agent's prompt store records the deciding OS account; PromptReport.decided_by).
2. Otherwise (a prompt missed, or decided by a designated approver instead), the users logged in
   at the endpoint when the session opened: the machine context recorded in the session's opening
   transcript entry (``users``, as the agent last reported them). Several logged-in users are one
   key ("ann, bob"): the record cannot say which of them was asked.
3. Nobody recorded: ``UNKNOWN_USER``.
An account name identifies a person within one client (domain accounts), so a user's pattern is
computed over the endpoints of the endpoint's client group.

Counted: prompts that ended with the user's answer (approved, denied) or unanswered (expired).
Prompts still open, cancelled or superseded by the technician, or never delivered, say nothing
about the user and are left out; a prompt decided by a designated approver counts for the
endpoint but not for a user. Hours are in the server's time zone (settings.TIME_ZONE): the
endpoint's own time zone is not recorded. Tenant-scoped through the default managers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import Prompt, PromptParty, PromptState, TranscriptEntry

UNKNOWN_USER = "(not recorded)"
PATTERN_DAYS = 30
_ANSWERED = (PromptState.APPROVED, PromptState.DENIED)
_COUNTED = (*_ANSWERED, PromptState.EXPIRED)


@dataclass(frozen=True)
class _Asked:
    endpoint_id: Any
    user: str | None  # None: decided by someone other than the endpoint's user (an approver)
    hour: int
    first: bool
    missed: bool
    decision_s: float | None


def _users_at_open(session_ids: set[Any]) -> dict[Any, str]:
    """Who was logged in at the endpoint when each session opened, as its opening entry recorded."""
    opened = TranscriptEntry.objects.filter(session_id__in=session_ids, kind=K.SESSION_OPENED).values_list(
        "session_id", "data"
    )
    users = {}
    for session_id, data in opened:
        names = sorted({str(u) for u in ((data or {}).get("machine_context") or {}).get("users") or []})
        users[session_id] = ", ".join(names) if names else UNKNOWN_USER
    return users


def _user_of(prompt: Prompt, at_open: dict[Any, str]) -> str | None:
    if prompt.state in _ANSWERED:
        if prompt.state_changed_by == PromptParty.APPROVER or prompt.decided_by.startswith("approver:"):
            return None
        if prompt.decided_by:
            return prompt.decided_by
    return at_open.get(prompt.session_id, UNKNOWN_USER)


def _asked(prompts: list[Prompt], first_ids: set[Any]) -> list[_Asked]:
    at_open = _users_at_open({p.session_id for p in prompts})
    rows = []
    for prompt in prompts:
        decision_s = None
        if prompt.state in _ANSWERED and prompt.decided_at:
            decision_s = max(0.0, (prompt.decided_at - prompt.created_at).total_seconds())
        rows.append(
            _Asked(
                endpoint_id=prompt.endpoint_id,
                user=_user_of(prompt, at_open),
                hour=timezone.localtime(prompt.created_at).hour,
                first=prompt.pk in first_ids,
                missed=prompt.state == PromptState.EXPIRED,
                decision_s=decision_s,
            )
        )
    return rows


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _stats(rows: list[_Asked]) -> dict[str, Any]:
    asked_by_hour, missed_by_hour = [0] * 24, [0] * 24
    for row in rows:
        asked_by_hour[row.hour] += 1
        missed_by_hour[row.hour] += row.missed
    decisions = [r.decision_s for r in rows if r.decision_s is not None]

    def part(subset: list[_Asked]) -> dict[str, Any]:
        missed = sum(r.missed for r in subset)
        return {"asked": len(subset), "missed": missed, "miss_rate": _share(missed, len(subset))}

    missed = sum(r.missed for r in rows)
    return {
        "asked": len(rows),
        "answered": len(rows) - missed,
        "missed": missed,
        "miss_rate": _share(missed, len(rows)),
        "asked_by_hour": asked_by_hour,
        "missed_by_hour": missed_by_hour,
        "first_prompt": part([r for r in rows if r.first]),
        "later_prompts": part([r for r in rows if not r.first]),
        "median_decision_s": statistics.median(decisions) if decisions else None,
    }


def prompt_patterns(*, endpoint_id: Any, client_group_id: Any, days: int = PATTERN_DAYS) -> dict[str, Any]:
    """The patterns of one endpoint, and of each user seen answering or missing prompts on it
    (their pattern over the client group's endpoints), over the last ``days`` days."""
    since = timezone.now() - timedelta(days=days)
    in_group = Prompt.objects.filter(endpoint__client_group_id=client_group_id, created_at__gte=since)
    # The first prompt of each session, whatever became of it (and however long ago): what the
    # user saw first.
    first_ids: set[Any] = set()
    seen_sessions: set[Any] = set()
    of_sessions = Prompt.objects.filter(session_id__in=in_group.values("session_id"))
    for prompt_id, session_id in of_sessions.order_by("session_id", "created_at", "id").values_list("id", "session_id"):
        if session_id not in seen_sessions:
            seen_sessions.add(session_id)
            first_ids.add(prompt_id)
    prompts = list(
        in_group.filter(state__in=_COUNTED).only(
            "id", "session_id", "endpoint_id", "state", "state_changed_by", "decided_by", "decided_at", "created_at"
        )
    )
    rows = _asked(prompts, first_ids)
    here = [r for r in rows if r.endpoint_id == endpoint_id]
    by_user: dict[str, list[_Asked]] = defaultdict(list)
    for row in rows:
        if row.user is not None:
            by_user[row.user].append(row)
    users_here = sorted({r.user for r in here if r.user is not None})
    return {
        "days": days,
        "time_zone": settings.TIME_ZONE,
        "endpoint": _stats(here),
        "users": [{"user": user, **_stats(by_user[user])} for user in users_here],
    }
