"""Reads for approval prompts: the console's prompt list and statistics, the API's approval shape.
Tenant-scoped through the default managers."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from endpoints.models import Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of
from endpoints.selectors import approval_policy_for
from sessions_app.models import (
    PROMPT_OPEN,
    Action,
    ActionStatus,
    Prompt,
    PromptState,
    PromptTransition,
    SessionStatus,
    SupportSession,
)


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
        "reported_at": prompt.reported_at,
        "late_decision": prompt.late_decision,
        "late_not_run": prompt.late_not_run,
        "approval_used_by": prompt.approval_used_by,
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


# --- a prompt as the console shows it: the ledger's state, and what the endpoint's presence adds --


def endpoint_away_since(endpoint: Endpoint) -> datetime | None:
    """When an away endpoint was last heard from: its socket's close, or its last heartbeat."""
    if endpoint.disconnected_at and (
        endpoint.last_seen_at is None or endpoint.disconnected_at >= endpoint.last_seen_at
    ):
        return endpoint.disconnected_at
    return endpoint.last_seen_at


def prompt_honoured_late(prompt: Prompt) -> bool:
    """A decision made on the endpoint before the deadline that reached the server after it."""
    return (
        prompt.state in (PromptState.APPROVED, PromptState.DENIED)
        and prompt.reported_at is not None
        and prompt.reported_at > prompt.deadline_at
    )


def actions_stopped_by_expiry(*, prompt: Prompt) -> list[Action]:
    """The requests a prompt held that its expiry stopped before they were ever sent."""
    if prompt.batch_id:
        scope: dict[str, Any] = {"batch_id": prompt.batch_id}
    elif prompt.action_id:
        scope = {"pk": prompt.action_id}
    else:
        return []
    return list(
        Action.objects.filter(status=ActionStatus.EXPIRED, outbox_id="", **scope).order_by("batch_position", "pk")
    )


def late_rerun_blocker(prompt: Prompt, *, automatic: bool, now: datetime | None = None) -> str:
    """Why the requests an approval honoured late would not run again now ("" when they can).

    Reachability is not asked here: an automatic rerun follows the runtime's own report over
    its live connection, and a technician's rerun of an away endpoint waits for its return like
    any request queued for it (until the request's expiry). ``automatic`` also respects the
    queue expiry the technician set on the request; a technician choosing to run it now
    gives it a fresh one."""
    now = now or timezone.now()
    session = SupportSession.objects.get(pk=prompt.session_id)
    if session.status != SessionStatus.OPEN:
        return "the session was closed"
    if Endpoint.objects.get(pk=prompt.endpoint_id).status != EndpointStatus.ENROLLED:
        return "the endpoint was revoked"
    stopped = actions_stopped_by_expiry(prompt=prompt)
    if not stopped:
        return "nothing is left to run (the request was cancelled or ran meanwhile)"
    if automatic:
        lapsed = [a for a in stopped if a.expires_at and a.expires_at <= now]
        if lapsed:
            return f"its queue expiry passed at {timezone.localtime(lapsed[0].expires_at):%H:%M:%S}"
    return ""


def nobody_logged_in(endpoint: Endpoint) -> bool:
    """Whether the endpoint's last report says no user is logged in. A report that does not say
    (an older agent, a presence error) counts as nobody known to be there: the rule fails closed."""
    return (endpoint.machine_context or {}).get("user_logged_in") is not True


def escalation_blocker(prompt: Prompt, *, endpoint: Endpoint, now: datetime) -> str:
    """Why the prompt cannot go to the designated approver now, or "". With nobody logged in at the
    endpoint it may go at once, if the policy allows approval without a user; otherwise the user at
    the endpoint has the policy's share of the deadline to answer first."""
    policy = approval_policy_for(endpoint=endpoint)
    if nobody_logged_in(endpoint):
        if not policy.allow_without_user:
            return (
                "nobody is logged in at the endpoint, and this client's policy does not allow approval without"
                " a user there"
            )
        return ""
    opens = prompt.created_at + (prompt.deadline_at - prompt.created_at) * policy.escalate_after_percent / 100
    if now < opens:
        return (
            f"the user at the endpoint answers first: escalation opens at {timezone.localtime(opens):%H:%M:%S}"
            f" ({policy.escalate_after_percent}% of the response deadline)"
        )
    return ""


@dataclass
class PromptCard:
    """One prompt for the session page: the ledger, plus what the endpoint's presence says about it."""

    prompt: Prompt
    # "" (nothing to add), "unreachable" (could not reach the endpoint), "asleep" (held by an
    # endpoint that went away), "expired_held" (expired here, still held by an endpoint asleep
    # since before the deadline: a decision made there in time is honoured when it wakes).
    condition: str = ""
    note: str = ""
    away_since: datetime | None = None
    honoured_late: bool = False
    reruns: list[Action] = field(default_factory=list)
    can_run_now: bool = False
    watch_presence: bool = False
    # Why the prompt cannot be escalated yet (or at all), for a prompt whose policy allows escalating.
    escalation_note: str = ""


def _last_move_into(prompt: Prompt, state: str) -> PromptTransition | None:
    moves = [t for t in prompt.history.all() if t.to_state == state]
    return moves[-1] if moves else None


def prompt_card(prompt: Prompt, *, endpoint: Endpoint, presence: Presence, now: datetime) -> PromptCard:
    card = PromptCard(prompt=prompt)
    away = presence == Presence.OFFLINE
    card.away_since = endpoint_away_since(endpoint) if away else None
    since = f" since {timezone.localtime(card.away_since):%H:%M:%S}" if card.away_since else ""
    state = prompt.state
    card.watch_presence = prompt.is_open or state == PromptState.EXPIRED
    if state == PromptState.FAILED_TO_DELIVER:
        card.condition = "unreachable"
        move = _last_move_into(prompt, state)
        card.note = (move.detail if move and move.detail else "could not reach endpoint") + (
            " · it goes out when the endpoint returns, until the deadline"
        )
    elif state == PromptState.PENDING and away:
        card.condition = "unreachable"
        card.note = f"could not reach endpoint: offline{since}"
    elif state in (PromptState.DELIVERED, PromptState.ACKNOWLEDGED) and away:
        card.condition = "asleep"
        card.note = (
            f"held on the endpoint, endpoint asleep{since}. A decision made there before the deadline is "
            "honoured when it wakes: wait, or cancel and reissue."
        )
    elif state == PromptState.EXPIRED and away:
        expiry = _last_move_into(prompt, PromptState.EXPIRED)
        held = expiry is not None and expiry.from_state in (PromptState.DELIVERED, PromptState.ACKNOWLEDGED)
        unseen_since_deadline = endpoint.last_seen_at is None or endpoint.last_seen_at <= prompt.deadline_at
        if held and unseen_since_deadline:
            card.condition = "expired_held"
            card.note = (
                f"still held on the endpoint, endpoint asleep{since}: a decision made there before the "
                "deadline is honoured when it wakes."
            )
    if prompt.is_open and prompt.allow_escalation:
        card.escalation_note = escalation_blocker(prompt, endpoint=endpoint, now=now)
    if prompt_honoured_late(prompt):
        card.honoured_late = True
        card.reruns = list(Action.objects.filter(rerun_of__in=_gated_ids(prompt)).order_by("created_at"))
        card.can_run_now = (
            state == PromptState.APPROVED
            and not prompt.approval_used_at
            and bool(prompt.late_not_run)
            and not late_rerun_blocker(prompt, automatic=False, now=now)
        )
    return card


def _gated_ids(prompt: Prompt) -> list[Any]:
    if prompt.batch_id:
        return list(Action.objects.filter(batch_id=prompt.batch_id).values_list("pk", flat=True))
    return [prompt.action_id] if prompt.action_id else []


def session_prompt_cards(*, session: SupportSession) -> list[PromptCard]:
    endpoint = Endpoint.objects.get(pk=session.endpoint_id)
    now = timezone.now()
    presence = presence_of(endpoint, now)
    return [
        prompt_card(prompt, endpoint=endpoint, presence=presence, now=now)
        for prompt in session_prompts(session=session)
    ]


def session_prompt_card(*, session_id: Any, prompt_id: Any) -> PromptCard:
    prompt = session_prompts(session=SupportSession.objects.get(pk=session_id)).get(pk=prompt_id)
    endpoint = Endpoint.objects.get(pk=prompt.endpoint_id)
    now = timezone.now()
    return prompt_card(prompt, endpoint=endpoint, presence=presence_of(endpoint, now), now=now)


# --- the REST API's prompt shape -------------------------------------------------------------------


def prompt_list(*, session_id: Any = None, state: str = "") -> QuerySet[Prompt]:
    """The tenant's prompts, newest first; of one session, in one state (``open``: any open state)."""
    qs = Prompt.objects.select_related("endpoint", "requested_by")
    if session_id is not None:
        qs = qs.filter(session_id=session_id)
    if state == "open":
        qs = qs.filter(state__in=PROMPT_OPEN)
    elif state:
        qs = qs.filter(state=state)
    return qs.order_by("-created_at", "pk")


def prompt_data(prompt: Prompt) -> dict[str, Any]:
    """A prompt as the API shows it: the ledger's state and what can be done with it now."""
    now = timezone.now()
    return {
        "id": prompt.pk,
        "session": prompt.session_id,
        "endpoint": {"id": prompt.endpoint_id, "hostname": prompt.endpoint.hostname},
        "action": prompt.action_id,
        "batch": prompt.batch_id,
        "follow_up_at": prompt.follow_up_at,
        "title": prompt.title,
        "detail": prompt.detail,
        "requested_by": prompt.requested_by.get_username(),
        "state": prompt.state,
        "state_changed_by": prompt.state_changed_by,
        "open": prompt.is_open,
        "created_at": prompt.created_at,
        "deadline_at": prompt.deadline_at,
        "delivered_at": prompt.delivered_at,
        "seen_at": prompt.seen_at,
        "decided_at": prompt.decided_at,
        "decided_by": prompt.decided_by,
        "reported_at": prompt.reported_at,
        "superseded_by": prompt.superseded_by_id,
        "allow_escalation": prompt.allow_escalation,
        "escalated_at": prompt.escalated_at,
        "escalation_blocked": escalation_blocker(prompt, endpoint=prompt.endpoint, now=now)
        if prompt.is_open and prompt.allow_escalation
        else "",
        "late_decision": prompt.late_decision,
        "late_not_run": prompt.late_not_run,
        "approval_used_by": prompt.approval_used_by,
    }
