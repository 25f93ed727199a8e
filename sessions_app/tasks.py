"""Periodic session work: deadlines live in the database, these sweeps enforce them."""

from __future__ import annotations

from celery import shared_task

from sessions_app.services import actions as services


@shared_task(ignore_result=True)
def action_deadline_sweep() -> int:
    return services.action_deadline_sweep()


@shared_task(ignore_result=True)
def idle_sessions_sweep() -> int:
    return services.idle_sessions_sweep()


@shared_task(ignore_result=True)
def prompt_deadline_sweep() -> int:
    from sessions_app.services import approvals as prompts

    return prompts.prompt_deadline_sweep()


@shared_task(ignore_result=True)
def abandoned_sessions_sweep() -> int:
    return services.abandoned_sessions_sweep()


@shared_task(ignore_result=True)
def session_connectivity_sweep() -> int:
    from sessions_app.services import connectivity

    return connectivity.session_connectivity_sweep()
