"""/metrics: bridge health in Prometheus text format, read from the database at scrape time
(so any server process answers for all of them), plus the bridge's counters: under `manage.py
serve` (PROMETHEUS_MULTIPROC_DIR set) those of every process, summed, whichever process answers;
else this process's own."""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from bridge import health
from caisey import tenancy
from endpoints.models import Endpoint, EndpointStatus

# Collectors of the apps above the bridge (the audit stream's lag), registered at start-up
# (their AppConfig.ready) so the bridge imports none of them; each is instantiated per scrape.
_extra_collectors: list[type] = []


def register_collector(collector: type) -> type:
    """Add ``collector`` (a class with ``collect()``) to every /metrics answer; registering twice is a no-op."""
    if collector not in _extra_collectors:
        _extra_collectors.append(collector)
    return collector


class BridgeHealthCollector:
    def collect(self):
        # Every tenant's endpoints, for the server's operator: named cross-tenant work.
        with tenancy.system():
            yield from self._collect()

    def _collect(self):
        endpoints = list(Endpoint.objects.filter(status=EndpointStatus.ENROLLED).select_related("tenant"))
        figures = health.health_for([e.pk for e in endpoints])
        labels = ["endpoint", "hostname", "tenant"]
        depth = GaugeMetricFamily("caisey_endpoint_queue_depth", "Unacknowledged messages per endpoint", labels=labels)
        failed = GaugeMetricFamily("caisey_endpoint_failed_to_deliver", "Messages given up on", labels=labels)
        latency = GaugeMetricFamily(
            "caisey_endpoint_delivery_latency_ms", "Delivery latency over the last hour", labels=[*labels, "quantile"]
        )
        reconnects = GaugeMetricFamily("caisey_endpoint_reconnects_1h", "Reconnects in the last hour", labels=labels)
        state = GaugeMetricFamily(
            "caisey_endpoint_connectivity", "1 for the endpoint's connectivity", labels=[*labels, "state"]
        )
        for endpoint in endpoints:
            h = figures[endpoint.pk]
            key = [str(endpoint.pk), endpoint.hostname, endpoint.tenant.slug]
            depth.add_metric(key, h.queue_depth)
            failed.add_metric(key, h.failed_to_deliver)
            reconnects.add_metric(key, h.reconnects_1h)
            for q, value in (("0.5", h.latency_p50_ms), ("0.95", h.latency_p95_ms)):
                if value is not None:
                    latency.add_metric([*key, q], value)
            state.add_metric([*key, health.connectivity(endpoint, h).value], 1)
        yield from (depth, failed, latency, reconnects, state)
        total = health.overall()
        for name, help_text in (
            ("queue_depth", "Unacknowledged messages, all endpoints"),
            ("failed_to_deliver", "Messages given up on, all endpoints"),
            ("messages_per_second", "Messages acknowledged per second over the last minute"),
            ("reconnects_1h", "Agent connections opened in the last hour"),
        ):
            yield GaugeMetricFamily(f"caisey_bridge_{name}", help_text, value=total[name])
        overall_latency = GaugeMetricFamily(
            "caisey_bridge_delivery_latency_ms", "Delivery latency over the last hour", labels=["quantile"]
        )
        for q, key in (("0.5", "latency_p50_ms"), ("0.95", "latency_p95_ms")):
            if total[key] is not None:
                overall_latency.add_metric([q], total[key])
        yield overall_latency


def _authorised(request) -> bool:
    token = settings.CAISEY["METRICS_TOKEN"]
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token and supplied and hmac.compare_digest(token, supplied):
        return True
    return request.user.is_authenticated and request.user.is_superuser


def metrics_view(request):
    if not _authorised(request):
        return HttpResponseForbidden("metrics need a superuser session or the CAISEY_METRICS_TOKEN bearer token\n")
    registry = CollectorRegistry()
    registry.register(BridgeHealthCollector())
    for collector in _extra_collectors:
        registry.register(collector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several server processes behind one socket: a scrape reaches one of them at random, and
        # its own counters alone would jump between scrapes. Every process writes its counters to
        # that folder; they are read and summed here.
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    body = generate_latest(registry) + generate_latest(counters)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
