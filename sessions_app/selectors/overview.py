"""The fleet overview, a technician's home page: per client group, its endpoints by connectivity
(``bridge.health.connectivity_of``, the judgement every page shows), the degraded and offline ones
with the figures that explain them (why, since when, delivery p95, queue), messages that failed to
deliver, approval prompts waiting and expired, and the open sessions with who holds them.

Plain data in a fixed number of queries, whatever the size of the fleet (a test counts them).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from bridge import health
from endpoints.models import ClientGroup, Endpoint, EndpointStatus, Presence
from sessions_app.models import PROMPT_OPEN, Prompt, PromptState, SessionStatus, SupportSession

STATES = [Presence.ACTIVE, Presence.LAZY, Presence.WAKING, Presence.DEGRADED, Presence.OFFLINE]
#: Expired prompts are counted over this window (older ones are history, not something to act on).
EXPIRED_WINDOW = timedelta(hours=24)
#: Open sessions listed per client group (the count is always complete).
SESSIONS_SHOWN = 20


def _group(pk: Any, name: str, slug: str) -> dict[str, Any]:
    return {
        "id": pk,
        "name": name,
        "slug": slug,
        "endpoints": 0,
        "by_state": {state.value: 0 for state in STATES},
        "attention": [],  # degraded and offline endpoints, with why
        "failed_to_deliver": 0,
        "failed_1h": 0,
        "queued": 0,
        "prompts_waiting": 0,
        "prompts_failed_to_deliver": 0,
        "prompts_expired": 0,
        "open_sessions": 0,
        "sessions": [],
    }


def fleet_overview(*, now=None) -> dict[str, Any]:
    """The overview of the bound tenant's fleet, per client group and in total."""
    now = now or timezone.now()
    groups: dict[Any, dict[str, Any]] = {
        g.pk: _group(g.pk, g.name, g.slug) for g in ClientGroup.objects.order_by("name")
    }
    endpoints = list(Endpoint.objects.filter(status=EndpointStatus.ENROLLED).order_by("hostname"))
    figures = health.health_for([e.pk for e in endpoints], now)
    for endpoint in endpoints:
        group = groups.get(endpoint.client_group_id)
        if group is None:  # an endpoint outside any client group
            group = groups.setdefault(None, _group(None, "No client group", ""))
        h = figures[endpoint.pk]
        c = health.connectivity_of(endpoint, h, now)
        group["endpoints"] += 1
        group["by_state"][c.state.value] += 1
        group["failed_to_deliver"] += h.failed_to_deliver
        group["failed_1h"] += h.failed_1h
        group["queued"] += h.queue_depth
        if c.state in (Presence.DEGRADED, Presence.OFFLINE):
            group["attention"].append(
                {
                    "endpoint_id": endpoint.pk,
                    "hostname": endpoint.hostname,
                    "connectivity": c,
                    "state": c.state.value,
                    "reason": c.reason,
                    "since": c.since,
                    "last_seen": endpoint.last_seen_at,
                    "p95_ms": h.latency_p95_ms,
                    "queue": h.queue_depth,
                    "failed_to_deliver": h.failed_to_deliver,
                    "last_error": h.last_error,
                }
            )
    prompts = (
        Prompt.objects.filter(state__in=[*PROMPT_OPEN, PromptState.EXPIRED])
        .exclude(state=PromptState.EXPIRED, deadline_at__lt=now - EXPIRED_WINDOW)
        .values("endpoint__client_group_id", "state")
        .annotate(n=Count("id"))
    )
    for row in prompts:
        group = groups.get(row["endpoint__client_group_id"]) or groups.setdefault(
            None, _group(None, "No client group", "")
        )
        if row["state"] == PromptState.EXPIRED:
            group["prompts_expired"] += row["n"]
        elif row["state"] == PromptState.FAILED_TO_DELIVER:
            group["prompts_failed_to_deliver"] += row["n"]
        else:
            group["prompts_waiting"] += row["n"]
    sessions = (
        SupportSession.objects.filter(status=SessionStatus.OPEN)
        .select_related("endpoint", "opened_by")
        .order_by("-opened_at")
    )
    holders: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for session in sessions:
        group = groups.get(session.endpoint.client_group_id) or groups.setdefault(
            None, _group(None, "No client group", "")
        )
        group["open_sessions"] += 1
        holder = session.opened_by.get_username()
        holders[group["id"]][holder] += 1
        if len(group["sessions"]) < SESSIONS_SHOWN:
            group["sessions"].append(
                {
                    "session_id": session.pk,
                    "hostname": session.endpoint.hostname,
                    "endpoint_id": session.endpoint_id,
                    "held_by": holder,
                    "opened_at": session.opened_at,
                    "reason": session.reason,
                }
            )
    for group in groups.values():
        group["holders"] = sorted(holders[group["id"]].items(), key=lambda kv: (-kv[1], kv[0]))
        group["attention"].sort(key=lambda a: (a["state"] != Presence.OFFLINE.value, a["hostname"]))
    ordered = [g for g in groups.values() if g["endpoints"] or g["open_sessions"] or g["id"] is not None]
    keys = [
        "endpoints",
        "failed_to_deliver",
        "failed_1h",
        "queued",
        "prompts_waiting",
        "prompts_failed_to_deliver",
        "prompts_expired",
        "open_sessions",
    ]
    totals: dict[str, Any] = {key: sum(g[key] for g in ordered) for key in keys}
    totals["by_state"] = {state.value: sum(g["by_state"][state.value] for g in ordered) for state in STATES}
    return {"groups": ordered, "totals": totals, "states": [s.value for s in STATES], "at": now}
