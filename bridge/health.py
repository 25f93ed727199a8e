"""Bridge health: where the path to an endpoint is thinning.

Per endpoint: queue depth (unacked messages), delivery latency (the send on the
connection that delivered it -> its ack) p50/p95 over the last hour, reconnects in the
last hour, last error. Connectivity adds ``degraded`` to the heartbeat-derived presence
when a connected endpoint lags or keeps reconnecting, judged on the path as it is now:
time a message spent waiting while the endpoint was away is not delivery latency, and a
message created before the current connection counts as waiting only from its start.
Everything is read from the database, so every server process tells the same story.

Reads go through the scoped managers: a page or service sees its own tenant's figures;
``overall`` (and /metrics) run under ``tenancy.system()``, named by their caller.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from bridge.models import AgentConnection, OutboxMessage, OutboxStatus
from endpoints.models import Endpoint, EndpointStatus, Presence
from endpoints.presence import presence_of, waking

HOUR = timedelta(hours=1)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class EndpointHealth:
    queue_depth: int = 0
    failed_to_deliver: int = 0
    failed_1h: int = 0
    oldest_unacked_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    delivered_1h: int = 0
    reconnects_1h: int = 0
    recent_p95_ms: float | None = None
    recent_reconnects: int = 0
    last_error: str = ""
    degraded_reasons: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons)

    def as_dict(self) -> dict:
        return {
            "queue_depth": self.queue_depth,
            "failed_to_deliver": self.failed_to_deliver,
            "failed_1h": self.failed_1h,
            "oldest_unacked_s": self.oldest_unacked_s,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "delivered_1h": self.delivered_1h,
            "reconnects_1h": self.reconnects_1h,
            "last_error": self.last_error,
            "degraded_reasons": self.degraded_reasons,
        }


def health_for(endpoint_ids: Iterable, now: datetime | None = None) -> dict:
    """Health of many endpoints in a fixed number of queries."""
    now = now or timezone.now()
    ids = list(endpoint_ids)
    result = {pk: EndpointHealth() for pk in ids}
    if not ids:
        return result
    since = now - HOUR
    rows = OutboxMessage.objects.filter(endpoint_id__in=ids)
    # A message waits on the path only from the start of the current connection: before it, the
    # endpoint was away (offline, which connectivity says first), not slow.
    connected = dict(Endpoint.objects.filter(pk__in=ids).values_list("pk", "connected_at"))
    for row in (
        rows.filter(status=OutboxStatus.QUEUED).values("endpoint_id").annotate(n=Count("id"), oldest=Min("created_at"))
    ):
        h = result[row["endpoint_id"]]
        h.queue_depth = row["n"]
        # Not below 0: a message held for a check-in (outbox_enqueue not_before) is queued from then.
        start = max(filter(None, (row["oldest"], connected.get(row["endpoint_id"]))))
        h.oldest_unacked_s = max(0.0, (now - start).total_seconds())
    failed = rows.filter(status=OutboxStatus.FAILED_TO_DELIVER)
    for row in failed.values("endpoint_id").annotate(
        n=Count("id"),
        # When it failed is not stored: its last attempt (or, never attempted, its creation) stands in.
        recent=Count(
            "id", filter=Q(last_attempt_at__gte=since) | Q(last_attempt_at__isnull=True, created_at__gte=since)
        ),
    ):
        result[row["endpoint_id"]].failed_to_deliver = row["n"]
        result[row["endpoint_id"]].failed_1h = row["recent"]
    cfg = settings.CAISEY
    window_start = now - timedelta(seconds=cfg["DEGRADED_WINDOW_S"])
    latencies: dict = defaultdict(list)
    recent: dict = defaultdict(list)
    for endpoint_id, latency, acked_at in rows.filter(acked_at__gte=since).values_list(
        "endpoint_id", "latency_ms", "acked_at"
    ):
        latencies[endpoint_id].append(latency)
        if acked_at >= window_start:
            recent[endpoint_id].append(latency)
    for endpoint_id, values in latencies.items():
        h = result[endpoint_id]
        h.delivered_1h = len(values)
        h.latency_p50_ms = percentile(values, 50)
        h.latency_p95_ms = percentile(values, 95)
        h.recent_p95_ms = percentile(recent[endpoint_id], 95)
    connects = (
        AgentConnection.objects.filter(endpoint_id__in=ids)
        .values("endpoint_id")
        .annotate(
            recent=Count("id", filter=Q(opened_at__gte=since)),
            in_window=Count("id", filter=Q(opened_at__gte=window_start)),
            first=Min("opened_at"),
        )
    )
    for row in connects:
        # The very first connection of an endpoint is not a reconnect.
        h = result[row["endpoint_id"]]
        h.reconnects_1h = max(0, row["recent"] - (1 if row["first"] >= since else 0))
        h.recent_reconnects = max(0, row["in_window"] - (1 if row["first"] >= window_start else 0))
    errors = (
        rows.exclude(last_error="")
        .exclude(status=OutboxStatus.ACKED)
        .order_by("endpoint_id", "-last_attempt_at")
        .values_list("endpoint_id", "last_error")
    )
    for endpoint_id, error in errors:
        if not result[endpoint_id].last_error:
            result[endpoint_id].last_error = error
    # Degraded is judged on a recent window, so an endpoint recovers once the path clears.
    window_min = cfg["DEGRADED_WINDOW_S"] / 60
    for h in result.values():
        if h.oldest_unacked_s is not None and h.oldest_unacked_s > cfg["DEGRADED_OLDEST_UNACKED_S"]:
            h.degraded_reasons.append(f"oldest unacknowledged message waiting {h.oldest_unacked_s:.0f}s")
        if h.recent_p95_ms is not None and h.recent_p95_ms > cfg["DEGRADED_P95_LATENCY_MS"]:
            h.degraded_reasons.append(f"delivery latency p95 {h.recent_p95_ms:.0f} ms (last {window_min:.0f} min)")
        if h.recent_reconnects >= cfg["DEGRADED_RECONNECTS"]:
            plural = "s" if h.recent_reconnects != 1 else ""
            h.degraded_reasons.append(f"{h.recent_reconnects} reconnect{plural} in the last {window_min:.0f} min")
    return result


def connectivity(endpoint: Endpoint, health: EndpointHealth, now: datetime | None = None) -> Presence:
    return connectivity_of(endpoint, health, now).state


# Connectivity periods, what a session's record and the webhooks tell of: lazy, active and waking
# are all a working path (the endpoint merely sleeps between heartbeats, or is being woken); going
# from one to another is no change of period.
PERIOD: dict[Presence, str] = {
    Presence.ACTIVE: "up",
    Presence.LAZY: "up",
    Presence.WAKING: "up",
    Presence.DEGRADED: "degraded",
    Presence.OFFLINE: "offline",
}


@dataclass(frozen=True)
class Connectivity:
    """An endpoint's connectivity as every console page shows it: the state, why, and since when.
    ``as_payload`` is the one shape pages render and live updates carry (``endpoint.presence``)."""

    state: Presence
    reason: str
    since: datetime | None

    def as_payload(self, endpoint: Endpoint) -> dict:
        last_seen = endpoint.last_seen_at
        return {
            "id": str(endpoint.pk),
            "hostname": endpoint.hostname,
            "state": self.state.value,
            "presence": self.state.value,  # the name older pages and clients read
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            # As the server renders it (its time zone), so a live update reads like the page around it.
            "since_text": f"{timezone.localtime(self.since):%H:%M:%S}" if self.since else "",
            "last_seen": last_seen.isoformat() if last_seen else None,
            "context_updated_at": endpoint.context_updated_at.isoformat() if endpoint.context_updated_at else None,
            "agent_version": endpoint.agent_version,
        }


def _offline_reason(endpoint: Endpoint) -> tuple[str, datetime | None]:
    if endpoint.status == EndpointStatus.REVOKED:
        return "revoked", endpoint.disconnected_at or endpoint.last_seen_at
    if endpoint.last_seen_at is None:
        return "never connected", None
    if endpoint.disconnected_at and endpoint.disconnected_at >= endpoint.last_seen_at:
        return "the agent's connection closed", endpoint.disconnected_at
    if waking(endpoint):
        return "asked to wake, no answer before the deadline of its previous cadence", endpoint.last_seen_at
    return "heartbeats stopped without a disconnect", endpoint.last_seen_at


def connectivity_of(endpoint: Endpoint, health: EndpointHealth | None, now: datetime | None = None) -> Connectivity:
    """Offline (heartbeats stopped or the socket closed), else degraded (the path lags or keeps
    dropping), else waking (asked to wake, the agent has not answered at the new cadence yet:
    ``endpoints.presence``), else its mode.

    ``health`` None: the degraded judgement is the one last announced (the presence sweep judges
    it every few seconds), so an announcement rung by a connect or a mode change costs no health
    queries and never overwrites a degraded the sweep found."""
    now = now or timezone.now()
    presence = presence_of(endpoint, now)
    if presence == Presence.OFFLINE:
        reason, since = _offline_reason(endpoint)
        return Connectivity(Presence.OFFLINE, reason, since)
    if health is not None:
        degraded, reason = health.degraded, "; ".join(health.degraded_reasons)
    else:
        degraded, reason = endpoint.presence_announced == Presence.DEGRADED, endpoint.presence_reason
    if degraded:
        state = Presence.DEGRADED
    elif presence == Presence.WAKING:
        # Judged on the cadence it still beats at (endpoints.presence): offline only once that
        # cadence's deadline passes unanswered.
        state = presence
        reason = (
            f"asked to wake; waiting for the agent to answer at the active cadence "
            f"(it beats every {endpoint.heartbeat_interval:g} s until then)"
        )
        return Connectivity(state, reason, endpoint.mode_changed_at or now)
    else:
        state = presence
        reason = f"connected, heartbeat every {endpoint.heartbeat_interval:g} s"
    since = endpoint.presence_since if endpoint.presence_announced == state and endpoint.presence_since else now
    return Connectivity(state, reason, since)


def latency_series(endpoint_id, *, now: datetime | None = None, buckets: int = 12) -> list[dict]:
    """p50/p95 delivery latency per 5-minute bucket over the last hour, for the endpoint page chart."""
    now = now or timezone.now()
    width = HOUR / buckets
    start = now - HOUR
    values: list[list[float]] = [[] for _ in range(buckets)]
    acked = OutboxMessage.objects.filter(endpoint_id=endpoint_id, acked_at__gte=start).values_list(
        "acked_at", "latency_ms"
    )
    for acked_at, latency in acked:
        values[min(buckets - 1, int((acked_at - start) / width))].append(latency)
    return [
        {"start": start + i * width, "count": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)}
        for i, v in enumerate(values)
    ]


def overall(now: datetime | None = None) -> dict:
    """Aggregate figures for the whole bridge (all tenants: /metrics calls it under ``tenancy.system()``)."""
    now = now or timezone.now()
    rows = OutboxMessage.objects
    queued = rows.filter(status=OutboxStatus.QUEUED)
    latencies = list(rows.filter(acked_at__gte=now - HOUR).values_list("latency_ms", flat=True))
    return {
        "queue_depth": queued.count(),
        "failed_to_deliver": rows.filter(status=OutboxStatus.FAILED_TO_DELIVER).count(),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "messages_per_second": rows.filter(acked_at__gte=now - timedelta(seconds=60)).count() / 60.0,
        "reconnects_1h": AgentConnection.objects.filter(opened_at__gte=now - HOUR).count(),
    }
