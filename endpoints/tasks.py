"""Periodic work of the endpoints app (scheduled in CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from endpoints.security_log import security_events_prune


@shared_task(ignore_result=True)
def security_log_prune() -> int:
    """Idempotent: deletes what is past the retention, whenever it runs."""
    return security_events_prune()
