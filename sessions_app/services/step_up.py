"""Risky actions after a step-up check: the check (``endpoints.access.step_up_require``, done by
the view) is written to the session's transcript in the same transaction as the action.

Risky: shell commands and service restarts (``STEP_UP_KINDS``), share links; bulk runs and
approval-policy changes are checked too (sessions_app/views/bulk.py, endpoints/admin.py) but
have no single session transcript to write to.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction

from caisey.actors import Actor, actor_label
from endpoints.access import StepUp
from sessions_app.kinds import TranscriptKind
from sessions_app.models import Action, Incident, ShareLink, SupportSession, WakeChoice
from sessions_app.services import actions, sharing
from sessions_app.services.transcript import transcript_append

# Action kinds that change the endpoint beyond a diagnostic read.
STEP_UP_KINDS = frozenset({"shell", "service_restart"})


def _record(*, actor: Actor, session: SupportSession, step_up: StepUp, what: str) -> None:
    transcript_append(
        session=session,
        kind=TranscriptKind.IDENTITY_STEP_UP,
        actor=actor_label(actor),
        data={**step_up.as_record(), "for": what},
    )


@transaction.atomic
def action_request_stepped_up(
    *,
    actor: Actor,
    session: SupportSession,
    kind: str,
    params: dict[str, Any],
    expires_in: timedelta | None = None,
    wake: str = WakeChoice.NOW,
    step_up: StepUp | None,
) -> Action:
    """``actions.action_request``, with the step-up check a risky kind needs recorded first."""
    if kind in STEP_UP_KINDS:
        if step_up is None:
            raise ValueError(f"{kind} needs a step-up check (endpoints.access.step_up_require)")
        _record(actor=actor, session=session, step_up=step_up, what=kind)
    return actions.action_request(
        actor=actor, session=session, kind=kind, params=params, expires_in=expires_in, wake=wake
    )


@transaction.atomic
def share_link_create_stepped_up(
    *,
    actor: Actor,
    step_up: StepUp,
    session: SupportSession | None = None,
    incident: Incident | None = None,
    expires_in: timedelta,
    label: str = "",
) -> tuple[ShareLink, str]:
    """``sharing.share_link_create`` after a step-up check, recorded in the shared session's transcript."""
    if session is not None:
        _record(actor=actor, session=session, step_up=step_up, what="share link")
    return sharing.share_link_create(
        actor=actor, session=session, incident=incident, expires_in=expires_in, label=label
    )
