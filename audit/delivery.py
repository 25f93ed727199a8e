"""Delivering a sink's journal: the next batch after its cursor, sent, and the cursor moved only
once the collector took it.

Two workers, one sink: the sink's row is locked with SELECT ... FOR UPDATE SKIP LOCKED (on
PostgreSQL; SQLite serialises writers) just long enough to take a lease (``lease_token``,
``lease_until``); the network send happens after that short transaction, so no database lock
(and on SQLite, not the database's single write lock) is held while a collector takes its time.
A worker that finds a live lease skips the sink. A worker that dies mid-send leaves a lease that
expires (twice the send timeout), and the next sweep sends the same batch again: at-least-once,
the same event ids, which collectors drop as duplicates. The cursor moves only by a worker still
holding its lease, so a worker that outlived its lease cannot move it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit import formats, transport
from audit.journal import journal_sequence
from audit.models import AuditRecord, AuditSink, SinkKind
from caisey import tenancy
from endpoints.models import Tenant


@dataclass(frozen=True)
class DeliveryResult:
    sink_id: int
    sent: int  # records the collector accepted in this run
    cursor: int
    error: str = ""
    skipped: str = ""  # why nothing was tried (disabled, leased by another worker, nothing to send)


def batch_size() -> int:
    return int(settings.CAISEY.get("AUDIT_BATCH", 500))


def lease_length() -> timedelta:
    """How long a worker holds a sink: one send (bounded by the send timeout) with room to spare;
    renewed with every batch the collector accepts."""
    return timedelta(seconds=2 * transport.timeout_s() + 5)


def _lease(sink_id: int) -> tuple[AuditSink | None, uuid.UUID | None, str]:
    now = timezone.now()
    with transaction.atomic():
        # The sink is found by id before its tenant is known (a task takes ids): named cross-tenant
        # look, then its tenant is bound for the write.
        with tenancy.system():
            sink = AuditSink.objects.select_for_update(skip_locked=True).filter(pk=sink_id).first()
        if sink is None:
            return None, None, "missing or locked"
        if not sink.enabled:
            return sink, None, "disabled"
        if sink.lease_until is not None and sink.lease_until > now:
            return sink, None, "another worker is sending"
        token = uuid.uuid4()
        until = now + lease_length()
        with tenancy.bind(sink.tenant_id):
            AuditSink.objects.filter(pk=sink.pk).update(lease_token=token, lease_until=until)
        return sink, token, ""


def _release(sink: AuditSink, token: uuid.UUID, **fields) -> bool:
    with tenancy.bind(sink.tenant_id):
        return bool(
            AuditSink.objects.filter(pk=sink.pk, lease_token=token).update(lease_token=None, lease_until=None, **fields)
        )


def encode_batch(
    sink_kind: str, records: list[AuditRecord], *, tenant_slug: str, max_bytes: int | None = None
) -> tuple[bytes, int]:
    """The payload of the first records that fit in ``max_bytes`` (at least one), and how many."""
    limit = max_bytes if max_bytes is not None else int(settings.CAISEY.get("AUDIT_BATCH_BYTES", 4 * 1024 * 1024))
    host = formats.hostname()
    parts: list[bytes] = []
    size = 0
    for record in records:
        obj = formats.record_json(record, tenant_slug=tenant_slug)
        if sink_kind == SinkKind.JSON_HTTPS:
            part = formats.json_line(obj)
        else:
            part = formats.octet_counted(formats.syslog_message(obj, host=host))
        if parts and size + len(part) > limit:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts), len(parts)


def send(sink: AuditSink, payload: bytes) -> None:
    dest = transport.destination_of(sink)
    if sink.kind == SinkKind.JSON_HTTPS:
        transport.send_https(dest, payload)
    else:
        transport.send_syslog(dest, payload)


def sink_deliver(*, sink_id: int, max_batches: int = 20) -> DeliveryResult:
    """Send ``sink_id``'s records after its cursor, batch by batch (at most ``max_batches`` in one
    run: a long backlog is spread over sweeps so one sink's catch-up does not hold a worker).
    Idempotent; any number of workers may call it at once."""
    journal_sequence()
    sink, token, skipped = _lease(sink_id)
    if sink is None or token is None:
        return DeliveryResult(sink_id, 0, sink.cursor if sink else 0, skipped=skipped)
    sent, cursor = 0, sink.cursor
    with tenancy.bind(sink.tenant_id):
        slug = Tenant.objects.filter(pk=sink.tenant_id).values_list("slug", flat=True).first() or ""
        for _ in range(max_batches):
            fetched = list(
                AuditRecord.objects.filter(seq__gt=cursor, seq__isnull=False).order_by("seq")[: batch_size()]
            )
            if not fetched:
                break
            payload, fits = encode_batch(sink.kind, fetched, tenant_slug=slug)
            records = fetched[:fits]  # a batch is bounded in bytes too (an action's output runs long)
            try:
                send(sink, payload)
            except transport.SendError as exc:
                error = str(exc)[:1000]
                _release(sink, token, last_error=error, last_error_at=timezone.now())
                return DeliveryResult(sink_id, sent, cursor, error=error)
            except Exception as exc:
                # A fault of ours, not the collector's: shown on the sink, raised for the worker's log.
                _release(sink, token, last_error=f"internal error: {type(exc).__name__}", last_error_at=timezone.now())
                raise
            new_cursor = records[-1].seq
            assert new_cursor is not None
            # The collector took the batch: the cursor moves, only while the lease is ours.
            now = timezone.now()
            moved = AuditSink.objects.filter(pk=sink.pk, lease_token=token, cursor=cursor).update(
                cursor=new_cursor,
                sent_total=sink.sent_total + sent + len(records),
                last_sent_at=now,
                lease_until=now + lease_length(),  # renewed: the next batch gets a whole send's time
            )
            if not moved:
                return DeliveryResult(sink_id, sent, cursor, skipped="lease lost")
            sent += len(records)
            cursor = new_cursor
            if len(fetched) < batch_size() and fits == len(fetched):
                break
        _release(sink, token, last_error="")
    return DeliveryResult(sink_id, sent, cursor)


def sinks_to_deliver() -> list[int]:
    """Every enabled sink of every tenant not being sent right now (the sweep's cross-tenant look):
    a sink whose collector hangs is not queued again every sweep while its lease lasts."""
    with tenancy.system():
        return list(
            AuditSink.objects.filter(enabled=True)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=timezone.now()))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
