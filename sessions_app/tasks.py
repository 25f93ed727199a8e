"""Periodic session work: deadlines live in the database, these sweeps enforce them
(each sweep crosses tenants by name and binds each row's tenant for its write)."""

from __future__ import annotations

from celery import shared_task

from sessions_app.services import actions, approvals, connectivity, followups, sessions


@shared_task(ignore_result=True)
def action_deadline_sweep() -> int:
    return actions.action_deadline_sweep()


@shared_task(ignore_result=True)
def idle_sessions_sweep() -> int:
    return sessions.idle_sessions_sweep()


@shared_task(ignore_result=True)
def prompt_deadline_sweep() -> int:
    return approvals.prompt_deadline_sweep()


@shared_task(ignore_result=True)
def prompt_reach_sweep() -> int:
    return approvals.prompt_reach_sweep()


@shared_task(ignore_result=True)
def abandoned_sessions_sweep() -> int:
    return sessions.abandoned_sessions_sweep()


@shared_task(ignore_result=True)
def session_connectivity_sweep() -> int:
    return connectivity.session_connectivity_sweep()


@shared_task(ignore_result=True)
def follow_up_reminder_sweep() -> int:
    return followups.follow_up_reminder_sweep()
