"""The audit stream's Celery tasks: the beat sweep, and one delivery task per sink (so a
collector that hangs holds its own task for the send timeout at most, never another sink's)."""

from __future__ import annotations

from celery import shared_task

from audit.delivery import sink_deliver, sinks_to_deliver
from audit.journal import journal_prune, journal_sequence


@shared_task(ignore_result=True)
def audit_stream_sweep() -> int:
    """Stamp the journal's commit order, then queue each enabled sink's delivery (by id)."""
    journal_sequence()
    sinks = sinks_to_deliver()
    for sink_id in sinks:
        audit_sink_deliver.delay(sink_id)
    return len(sinks)


@shared_task(ignore_result=True)
def audit_sink_deliver(sink_id: int) -> int:
    """Idempotent: a second copy finds the sink leased (or nothing after its cursor) and returns."""
    return sink_deliver(sink_id=sink_id).sent


@shared_task(ignore_result=True)
def audit_journal_prune() -> int:
    return journal_prune()
