"""Bridge health: where the path to an endpoint is thinning.

Per endpoint: queue depth (unacked messages), delivery latency (created ->
acked) p50/p95 over the last hour, reconnects in the last hour, last error.
Connectivity adds ``degraded`` to the heartbeat-derived presence when a
connected endpoint lags or keeps reconnecting. Everything is read from the
database, so every server process tells the same story.

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
from endpoints.models import Endpoint, Presence
from endpoints.presence import presence_of

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
    for row in (
        rows.filter(status=OutboxStatus.QUEUED).values("endpoint_id").annotate(n=Count("id"), oldest=Min("created_at"))
    ):
        h = result[row["endpoint_id"]]
        h.queue_depth = row["n"]
        # Not below 0: a message held for a check-in (outbox_enqueue not_before) is queued from then.
        h.oldest_unacked_s = max(0.0, (now - row["oldest"]).total_seconds())
    for row in rows.filter(status=OutboxStatus.FAILED_TO_DELIVER).values("endpoint_id").annotate(n=Count("id")):
        result[row["endpoint_id"]].failed_to_deliver = row["n"]
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
            h.degraded_reasons.append(f"{h.recent_reconnects} reconnects in the last {window_min:.0f} min")
    return result


def connectivity(endpoint: Endpoint, health: EndpointHealth, now: datetime | None = None) -> Presence:
    presence = presence_of(endpoint, now)
    if presence != Presence.OFFLINE and health.degraded:
        return Presence.DEGRADED
    return presence


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
