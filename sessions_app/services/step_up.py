"""The step-up check in a session's record: what ``endpoints.access.step_up_require`` (done by
the view) returned is passed to the service of the risky action as ``step_up=`` and written to
the transcript, in the same transaction, just before the action's own entry.

Risky, in a session: shell commands and service restarts (``STEP_UP_KINDS``, alone or in a
batch), share links (a session's or an incident's: each shared session's record), bulk runs
(each session of the run). Tenant-level changes (approval policies, the tenant's security
settings, API tokens, single sign-on) have no session: their security-log event carries it.
"""

from __future__ import annotations

from caisey.actors import Actor, actor_label
from endpoints.access import StepUp
from sessions_app.kinds import TranscriptKind
from sessions_app.models import SupportSession
from sessions_app.services.transcript import transcript_append

# Action kinds that change the endpoint beyond a diagnostic read.
STEP_UP_KINDS = frozenset({"shell", "service_restart"})


def step_up_entry(*, actor: Actor, step_up: StepUp, what: str) -> dict:
    """The transcript entry of a step-up check (for ``transcript_append`` / ``transcript_begin``)."""
    return {
        "kind": TranscriptKind.IDENTITY_STEP_UP,
        "actor": actor_label(actor),
        "data": {**step_up.as_record(), "for": what},
    }


def step_up_record(*, actor: Actor, session: SupportSession, step_up: StepUp, what: str) -> None:
    """Write the check to ``session``'s transcript (inside the caller's transaction)."""
    transcript_append(session=session, **step_up_entry(actor=actor, step_up=step_up, what=what))
