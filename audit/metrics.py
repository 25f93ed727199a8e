"""The audit stream's figures in /metrics (registered with bridge.prometheus at start-up)."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from audit.selectors import all_sinks_status


class AuditLagCollector:
    def collect(self):
        labels = ["sink", "tenant", "kind"]
        records = GaugeMetricFamily(
            "caisey_audit_sink_lag_records", "Audit records of the sink's tenant not yet accepted by it", labels=labels
        )
        seconds = GaugeMetricFamily(
            "caisey_audit_sink_lag_seconds", "Age of the oldest audit record the sink has not accepted", labels=labels
        )
        failing = GaugeMetricFamily("caisey_audit_sink_failing", "1 when the sink's last attempt failed", labels=labels)
        enabled = GaugeMetricFamily("caisey_audit_sink_enabled", "1 when the sink is enabled", labels=labels)
        for s in all_sinks_status():
            key = [str(s.id), str(s.tenant_id), s.kind]
            records.add_metric(key, s.lag_records)
            seconds.add_metric(key, s.lag_seconds)
            failing.add_metric(key, 1 if s.last_error else 0)
            enabled.add_metric(key, 1 if s.enabled else 0)
        yield from (records, seconds, failing, enabled)
