"""Periodic bridge work. Tasks are thin and idempotent: the database decides."""

from __future__ import annotations

from celery import shared_task

from bridge import outbox
from bridge import presence_sweep as sweep


@shared_task(ignore_result=True)
def presence_sweep() -> int:
    return sweep.run()


@shared_task(ignore_result=True)
def outbox_sweep() -> dict:
    return outbox.outbox_sweep()
