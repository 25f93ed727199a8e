"""Celery tasks of webhooks: one delivery by id (queued when the change commits), and the sweep
(Celery beat, ``caisey/settings.py``) that hands out every due row, so a lost task, a dead worker
or an unreachable broker delays a delivery but never loses it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import shared_task

from integrations.delivery import deliver, due_deliveries

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def webhook_deliver(delivery_id: int) -> str:
    return deliver(delivery_id)


@shared_task(ignore_result=True)
def webhook_sweep() -> int:
    due = due_deliveries()
    deliveries_enqueue(due)
    return len(due)


def deliveries_enqueue(ids: Iterable[int]) -> None:
    """Queue a task per delivery (after the commit that wrote them). A broker that is down is not
    the change's failure: the row is in the database and the sweep sends it."""
    for delivery_id in ids:
        try:
            webhook_deliver.apply_async(args=[delivery_id], retry=False)
        except Exception as exc:  # the broker's errors vary by transport; all mean "the sweep will"
            log.warning("webhook delivery %s not queued (%s); the sweep will send it", delivery_id, exc)
            return
