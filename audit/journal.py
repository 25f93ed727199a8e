"""Writing the audit journal (in the event's transaction) and stamping its commit order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Min, Value, When
from django.utils import timezone

from audit.models import AuditRecord, AuditSequence, AuditSink
from caisey import tenancy
from caisey.audit_hooks import AuditEvent

# Rows stamped per sequencing pass (one UPDATE of that many rows; the pass repeats until none are left).
SEQUENCE_BATCH = 1000


def journal_write(events: Sequence[AuditEvent]) -> None:
    """The audit hook's listener: one journal row per event, in the caller's transaction (so a
    rolled-back event leaves no record, and a committed one always has one)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit records must be written inside the transaction of the event they record")
    rows = [
        AuditRecord(
            tenant_id=e.tenant_id,
            event_id=e.event_id,
            category=e.category,
            kind=e.kind[:40],
            at=e.at,
            actor=e.actor[:200],
            session_id=e.session_id,
            endpoint_id=e.endpoint_id,
            data=e.data,
        )
        for e in events
    ]
    # The writers bind the event's tenant (or system()); the scoped manager checks every row against it.
    if len(rows) == 1:
        rows[0].save(force_insert=True)
    else:
        AuditRecord.objects.bulk_create(rows, batch_size=1000)  # a bulk run journals thousands at once


def journal_sequence() -> int:
    """Stamp the committed, unstamped journal rows with the next ``seq`` numbers, oldest first;
    returns how many. One pass at a time: the others skip (PostgreSQL: SKIP LOCKED on the
    sequencer's row; SQLite serialises writers anyway). Why this makes "seq > cursor" gap-free:
    audit/models.py. Idempotent and safe to run from any number of workers."""
    stamped = 0
    # The journal of every tenant is stamped in one order: named cross-tenant work.
    with tenancy.system():
        AuditSequence.objects.get_or_create(pk=1)
        while True:
            with transaction.atomic():
                state = AuditSequence.objects.select_for_update(skip_locked=True).filter(pk=1).first()
                if state is None:
                    return stamped  # another pass holds the lock: it stamps what is committed
                ids = list(
                    AuditRecord.objects.filter(seq__isnull=True)
                    .order_by("id")
                    .values_list("id", flat=True)[:SEQUENCE_BATCH]
                )
                if not ids:
                    return stamped
                first = state.last_seq + 1
                AuditRecord.objects.filter(pk__in=ids).update(
                    seq=Case(*[When(pk=pk, then=Value(first + n)) for n, pk in enumerate(ids)])
                )
                AuditSequence.objects.filter(pk=1).update(last_seq=state.last_seq + len(ids))
                stamped += len(ids)
            if len(ids) < SEQUENCE_BATCH:
                return stamped


# Rows deleted per statement: a prune after a long pause does not hold a long lock.
PRUNE_BATCH = 5000


def journal_prune(*, now: datetime | None = None) -> int:
    """Delete journal records older than CAISEY_AUDIT_JOURNAL_DAYS that every sink of their
    tenant has sent (a disabled sink holds what it has not sent; a tenant without sinks keeps
    nothing older); returns how many. Records not stamped yet are never deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CAISEY["AUDIT_JOURNAL_DAYS"])
    deleted = 0
    # Every tenant's journal, by age and cursor alone: named cross-tenant work, no record read.
    with tenancy.system():
        tenants = list(
            AuditRecord.objects.filter(journaled_at__lt=cutoff, seq__isnull=False)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
        for tenant_id in tenants:
            floor = AuditSink.objects.filter(tenant_id=tenant_id).aggregate(floor=Min("cursor"))["floor"]
            old = AuditRecord.objects.filter(tenant_id=tenant_id, journaled_at__lt=cutoff, seq__isnull=False)
            if floor is not None:
                old = old.filter(seq__lte=floor)
            while ids := list(old.values_list("pk", flat=True)[:PRUNE_BATCH]):
                deleted += AuditRecord.objects.filter(pk__in=ids).delete()[0]
    return deleted
