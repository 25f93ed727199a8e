"""The transcript's vocabulary: every kind of entry a session record can hold.

Values are the strings stored in ``TranscriptEntry.kind`` (and hashed into the chain), so
they never change; a StrEnum compares equal to its string, which keeps templates, filters
and stored records working unchanged.
"""

from __future__ import annotations

from enum import StrEnum, nonmember


class TranscriptKind(StrEnum):
    # Templates may name kinds (``K.NOTE``); Django would otherwise call the class.
    do_not_call_in_templates = nonmember(True)

    # sessions
    SESSION_OPENED = "session.opened"
    SESSION_CLOSED = "session.closed"
    SESSION_FOLLOW_UP_SCHEDULED = "session.follow_up_scheduled"
    SESSION_FOLLOW_UP_DUE = "session.follow_up_due"
    SESSION_FOLLOW_UP_OPENED = "session.follow_up_opened"
    SESSION_FOLLOW_UP_OF = "session.follow_up_of"
    SESSION_TICKET_SET = "session.ticket_set"
    NOTE = "note"
    # actions and batches
    ACTION_QUEUED = "action.queued"
    ACTION_APPROVED = "action.approved"
    ACTION_DISPATCHED = "action.dispatched"
    ACTION_RUNNING = "action.running"
    ACTION_OUTPUT = "action.output"
    ACTION_RESULT = "action.result"
    ACTION_RESULT_IGNORED = "action.result_ignored"
    ACTION_RESENT = "action.resent"
    ACTION_WOKEN = "action.woken"
    ACTION_CANCELLED = "action.cancelled"
    ACTION_EXPIRED = "action.expired"
    ACTION_FAILED_TO_DELIVER = "action.failed_to_deliver"
    ACTION_TIMED_OUT = "action.timed_out"
    BATCH_QUEUED = "batch.queued"
    RUNBOOK_RUN = "runbook.run"
    # approval prompts: one per prompt state, and the ledger's own remarks
    PROMPT_PENDING = "prompt.pending"
    PROMPT_DELIVERED = "prompt.delivered"
    PROMPT_ACKNOWLEDGED = "prompt.acknowledged"
    PROMPT_APPROVED = "prompt.approved"
    PROMPT_DENIED = "prompt.denied"
    PROMPT_EXPIRED = "prompt.expired"
    PROMPT_FAILED_TO_DELIVER = "prompt.failed_to_deliver"
    PROMPT_CANCELLED = "prompt.cancelled"
    PROMPT_SUPERSEDED = "prompt.superseded"
    PROMPT_LATE_DECISION_IGNORED = "prompt.late_decision_ignored"
    PROMPT_REPLAYED = "prompt.replayed"
    PROMPT_ESCALATED = "prompt.escalated"
    # a decision made on the endpoint before the deadline that reached the server after it
    PROMPT_LATE_DECISION_HONOURED = "prompt.late_decision_honoured"
    PROMPT_LATE_APPROVAL_NOT_RUN = "prompt.late_approval_not_run"
    PROMPT_RECORDED_APPROVAL_USED = "prompt.recorded_approval_used"
    # the bridge
    BRIDGE_CONNECTIVITY = "bridge.connectivity"
    # the endpoint
    ENDPOINT_REENROLLED = "endpoint.reenrolled"
    # incidents, sharing and review (written by their own services)
    SESSION_ADDED_TO_INCIDENT = "session.added_to_incident"
    SESSION_REMOVED_FROM_INCIDENT = "session.removed_from_incident"
    INCIDENT_TICKET_SET = "incident.ticket_set"
    SHARE_LINK_CREATED = "share.link_created"
    SHARE_LINK_REVOKED = "share.link_revoked"
    REVIEW_REDACTION = "review.redaction"
    REVIEW_NOTE = "review.note"
    REVIEW_COMPLETED = "review.completed"
    # identity: a recent second-factor check let a risky action through (endpoints.access)
    IDENTITY_STEP_UP = "identity.step_up"

    @property
    def family(self) -> str:
        """The part before the first dot ("action", "prompt", ...; "note" for notes)."""
        return self.value.split(".", 1)[0]

    @classmethod
    def of_prompt_state(cls, state: str) -> TranscriptKind:
        return cls(f"prompt.{state}")

    @classmethod
    def of_action_status(cls, status: str) -> TranscriptKind:
        return cls(f"action.{status}")
