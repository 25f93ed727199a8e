"""Reads of the audit stream: each sink with its lag, for the console page and /metrics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q
from django.utils import timezone

from audit.models import AuditRecord, AuditSink
from caisey import tenancy


@dataclass(frozen=True)
class SinkStatus:
    id: int
    tenant_id: uuid.UUID
    name: str
    kind: str
    kind_label: str
    destination: str
    enabled: bool
    allow_private: bool
    cursor: int
    sent_total: int
    last_sent_at: datetime | None
    last_error: str
    last_error_at: datetime | None
    lag_records: int  # journal records of the tenant not yet accepted by the collector
    lag_seconds: float  # age of the oldest of them (0 when none)
    # The settings an edit starts from (the console's edit form, the API's answer).
    host: str = ""
    port: int | None = None
    url: str = ""
    tls: bool = True
    ca_pem: str = ""
    created_at: datetime | None = None


def _status(sink: AuditSink, now: datetime) -> SinkStatus:
    # Not yet accepted: stamped after the cursor, or not stamped yet (committed, awaiting the sequencer).
    behind = AuditRecord.objects.filter(Q(seq__gt=sink.cursor) | Q(seq__isnull=True)).aggregate(
        n=Count("pk"), oldest=Min("journaled_at")
    )
    oldest = behind["oldest"]
    return SinkStatus(
        id=sink.pk,
        tenant_id=sink.tenant_id,
        name=sink.name,
        kind=sink.kind,
        kind_label=sink.get_kind_display(),
        destination=sink.destination,
        enabled=sink.enabled,
        allow_private=sink.allow_private,
        cursor=sink.cursor,
        sent_total=sink.sent_total,
        last_sent_at=sink.last_sent_at,
        last_error=sink.last_error,
        last_error_at=sink.last_error_at,
        lag_records=behind["n"],
        lag_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        host=sink.host,
        port=sink.port,
        url=sink.url,
        tls=sink.tls,
        ca_pem=sink.ca_pem,
        created_at=sink.created_at,
    )


def sinks_status(*, tenant_id: uuid.UUID | str) -> list[SinkStatus]:
    now = timezone.now()
    with tenancy.bind(tenant_id):
        return [_status(sink, now) for sink in AuditSink.objects.order_by("name", "pk")]


def sink_status(*, tenant_id: uuid.UUID | str, sink_id: int) -> SinkStatus:
    """One sink of the tenant (AuditSink.DoesNotExist for another tenant's or none)."""
    with tenancy.bind(tenant_id):
        return _status(AuditSink.objects.get(pk=sink_id), timezone.now())


def all_sinks_status() -> list[SinkStatus]:
    """Every tenant's sinks (the server operator's /metrics)."""
    now = timezone.now()
    with tenancy.system():
        tenants = list(AuditSink.objects.values_list("tenant_id", flat=True).distinct())
    found: list[SinkStatus] = []
    for tenant_id in tenants:
        with tenancy.bind(tenant_id):
            found += [_status(sink, now) for sink in AuditSink.objects.order_by("pk")]
    return found
