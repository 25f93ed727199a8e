"""The client's story of a reviewed record: what was checked, in what order, by whom, what was
found, and the technician's notes, in words, with figures formatted for people.

Built from the same ``SharedRecord`` as the full event log (sessions_app/selectors/sharing.py),
so redactions apply exactly as there: every text shown here is read from the reviewed fields
(``ReviewedEntry.fields``), never from an entry's raw data. One step per action (its request,
approval, output and result folded together), per note, and per session event; delivery
bookkeeping (dispatched, running, connectivity, share links, redactions) stays in the event
log only. Plain data: the share page (templates/share/record.html) and the PDF
(sessions_app/exports/pdf.py) render the same ``Story``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth import get_user_model

from caisey_agent.protocol import ACTION_KINDS
from sessions_app import formatting as fmt
from sessions_app.kinds import TranscriptKind as K
from sessions_app.selectors.review import ReviewedEntry, review_status
from sessions_app.selectors.sharing import SharedRecord

#: Every transcript kind as a sentence for a reader ("{who}" is the actor by name). None: not a
#: step of the story (delivery and sharing bookkeeping, shown in the event log only).
KIND_SENTENCES: dict[str, str | None] = {
    K.SESSION_OPENED: "{who} started a support session",
    K.SESSION_CLOSED: "{who} ended the session",
    K.SESSION_FOLLOW_UP_SCHEDULED: "{who} scheduled a follow-up",
    K.SESSION_FOLLOW_UP_DUE: None,
    K.SESSION_FOLLOW_UP_OPENED: "{who} opened the follow-up in a new session",
    K.SESSION_FOLLOW_UP_OF: "{who} started this session as a follow-up of an earlier one",
    K.NOTE: "{who} wrote a note",
    K.ACTION_QUEUED: "{who} asked for a check to run",
    K.ACTION_APPROVED: "The check was approved",
    K.ACTION_DISPATCHED: "The check was sent to the computer",
    K.ACTION_RUNNING: "The check started on the computer",
    K.ACTION_OUTPUT: "The computer sent output",
    K.ACTION_RESULT: "The check finished",
    K.ACTION_RESULT_IGNORED: "A late result arrived after the check had ended",
    K.ACTION_RESENT: "{who} sent the check again",
    K.ACTION_WOKEN: "{who} woke the computer to run the check now",
    K.ACTION_CANCELLED: "{who} cancelled the check",
    K.ACTION_EXPIRED: "The check expired before it could run",
    K.ACTION_FAILED_TO_DELIVER: "The check could not be delivered to the computer",
    K.ACTION_TIMED_OUT: "The check gave no result in time",
    K.BATCH_QUEUED: "{who} queued several checks to run in order",
    K.RUNBOOK_RUN: "{who} ran a checklist of steps",
    K.PROMPT_PENDING: "The user was asked for permission",
    K.PROMPT_DELIVERED: "The request for permission reached the computer",
    K.PROMPT_ACKNOWLEDGED: "The user saw the request for permission",
    K.PROMPT_APPROVED: "Permission was given",
    K.PROMPT_DENIED: "Permission was refused",
    K.PROMPT_EXPIRED: "The request for permission was not answered in time",
    K.PROMPT_FAILED_TO_DELIVER: "The request for permission could not reach the computer",
    K.PROMPT_CANCELLED: "The request for permission was withdrawn",
    K.PROMPT_SUPERSEDED: "The request for permission was replaced by a newer one",
    K.PROMPT_LATE_DECISION_IGNORED: "An answer arrived after the request had ended",
    K.PROMPT_LATE_DECISION_HONOURED: "An answer given in time reached us late and was honoured",
    K.PROMPT_LATE_APPROVAL_NOT_RUN: "The permission given in time could not be used automatically",
    K.PROMPT_RECORDED_APPROVAL_USED: "{who} ran the check with the permission given earlier",
    K.PROMPT_REPLAYED: "The request for permission was shown again",
    K.PROMPT_ESCALATED: "The request for permission was passed to your designated approver",
    K.BRIDGE_CONNECTIVITY: "The connection to the computer changed",
    K.ENDPOINT_REENROLLED: "The computer's agent was enrolled again",
    K.IDENTITY_STEP_UP: None,
    K.SESSION_TICKET_SET: "{who} linked the session to a ticket",
    K.INCIDENT_TICKET_SET: "{who} linked the incident to a ticket",
    K.SESSION_ADDED_TO_INCIDENT: "{who} added the session to the incident",
    K.SESSION_REMOVED_FROM_INCIDENT: "{who} removed the session from the incident",
    K.SHARE_LINK_CREATED: "{who} shared the record",
    K.SHARE_LINK_REVOKED: "{who} withdrew a shared link",
    K.REVIEW_REDACTION: "{who} removed sensitive content",
    K.REVIEW_NOTE: "{who} added a note for you",
    K.REVIEW_COMPLETED: "{who} reviewed the record",
}
#: Kinds that are steps of the story; an action's other kinds fold into its step.
STORY_KINDS = frozenset(
    {
        K.SESSION_OPENED,
        K.SESSION_CLOSED,
        K.SESSION_FOLLOW_UP_SCHEDULED,
        K.NOTE,
        K.REVIEW_NOTE,
        K.REVIEW_COMPLETED,
        K.SESSION_ADDED_TO_INCIDENT,
    }
)
#: How an action ended, by the status its result or final entry reports.
OUTCOMES: dict[str, str] = {
    "succeeded": "Completed",
    "failed": "Failed",
    "timed_out": "Gave no result in time",
    "cancelled": "Cancelled",
    "refused": "Refused by the computer",
    K.ACTION_CANCELLED: "Cancelled",
    K.ACTION_EXPIRED: "Did not run: it expired while waiting",
    K.ACTION_FAILED_TO_DELIVER: "Did not run: it could not be delivered to the computer",
    K.ACTION_TIMED_OUT: "Gave no result in time",
}
PROMPT_OUTCOMES: dict[str, str] = {
    K.PROMPT_PENDING: "permission asked",
    K.PROMPT_APPROVED: "permission given",
    K.PROMPT_DENIED: "permission refused",
    K.PROMPT_EXPIRED: "permission not answered in time",
    K.PROMPT_FAILED_TO_DELIVER: "the request for permission could not reach the computer",
    K.PROMPT_CANCELLED: "the request for permission was withdrawn",
    K.PROMPT_ESCALATED: "passed to your designated approver",
}


def sentence(kind: str, who: str = "") -> str:
    """A kind as a sentence; a kind not in the table still reads: "Backup finished" for "backup.finished"."""
    template = KIND_SENTENCES.get(kind)
    if template is None:
        words = kind.replace(".", " ").replace("_", " ").strip()
        template = (words or "something was recorded") + (" (by {who})" if who else "")
    if not template.startswith("{who}"):  # a name keeps its own case
        template = template[:1].upper() + template[1:]
    return template.format(who=who or "someone")


@dataclass
class Note:
    by: str
    at: datetime
    text: str


@dataclass
class Step:
    """One thing that happened, in words."""

    at: datetime
    kind: str  # "check", "note", "session", "review": the page's styling
    who: str
    what: str
    endpoint: str
    outcome: str = ""
    found: str = ""  # a diagnostic's result as the computer summarised it; a command's output
    output: str = ""  # a diagnostic's output
    notes: list[Note] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)  # (label, value), formatted
    withheld: bool = False


@dataclass
class Story:
    title: str
    client: str
    endpoints: list[str]
    technicians: list[str]
    reviews: list[str]  # "Dana Smith, 4 Dec 2026, 14:20:16 UTC" per reviewed session
    steps: list[Step]
    summary: str = ""
    status: str = ""
    valid_until: str = ""
    generated: str = ""
    redacted: bool = False
    names: dict[str, str] = field(default_factory=dict)  # username → name, for the event log's actors


def _text(item: ReviewedEntry, *path: str | int) -> str:
    """A field's text as the reader sees it (redactions applied); "" when not shown."""
    for f in item.fields:
        if f.path == path:
            return f.text
    return ""


def _fields_under(item: ReviewedEntry, top: str) -> list[tuple[str, str]]:
    out = []
    for f in item.fields:
        if f.path and f.path[0] == top and len(f.path) > 1:
            out.append((fmt.label(f.path), f.text if f.redacted else fmt.value(f.path, f.text)))
    return out


def _describe(item: ReviewedEntry) -> str:
    kind = item.action_kind
    if kind == "shell":
        command = _text(item, "params", "command")
        shell = _text(item, "params", "shell")
        how = {"powershell": " in PowerShell", "cmd": " in the Command Prompt", "sh": " in the shell"}.get(shell, "")
        return f"Ran a command{how}: {command}" if command else f"Ran a command{how}"
    spec = ACTION_KINDS.get(kind)
    title = spec.title if spec else (kind.replace("_", " ") or "a check")
    params = [f"{name.lower()} {value}" for name, value in _fields_under(item, "params") if value]
    return f"Checked: {title}" + (f" ({', '.join(params)})" if params else "")


def _names(record: SharedRecord) -> dict[str, str]:
    """Username → full name for the people named in the record (one query)."""
    usernames = {e.entry.actor.removeprefix("user:") for e in record.all_entries() if e.entry.actor.startswith("user:")}
    users = get_user_model().objects.filter(username__in=usernames)
    return {u.get_username(): (u.get_full_name().strip() or u.get_username()) for u in users}


def _action_step(step: Step, item: ReviewedEntry, names: dict[str, str]) -> None:
    kind = item.entry.kind
    if item.whole_redacted:
        return
    shell = item.action_kind == "shell"
    if kind == K.ACTION_OUTPUT:
        # A command's output is what it found; a diagnostic's result summarises its output.
        if shell:
            step.found += _text(item, "data")
        else:
            step.output += _text(item, "data")
    elif kind == K.ACTION_RESULT:
        status = _text(item, "status")
        outcome = OUTCOMES.get(status, status.replace("_", " ").capitalize())
        duration = item.entry.action.duration_s if item.entry.action else None
        if duration is not None and status in ("succeeded", "failed"):
            outcome += f" in {fmt.duration_s(duration)}"
        exit_code = _text(item, "exit_code")
        if status == "failed" and exit_code and exit_code != "0":
            outcome += f" (exit code {exit_code})"
        error = _text(item, "error")
        step.outcome = outcome + (f": {error}" if error else "")
        if not shell:  # a command's result text repeats its exit code and byte counts: the outcome says it
            step.found = _text(item, "result", "text")
    elif kind in (K.ACTION_CANCELLED, K.ACTION_EXPIRED, K.ACTION_FAILED_TO_DELIVER, K.ACTION_TIMED_OUT):
        outcome = OUTCOMES[kind]
        if kind == K.ACTION_CANCELLED and item.entry.actor.startswith("user:"):
            outcome += f" by {fmt.who(item.entry.actor, names)}"
        step.outcome = outcome
    elif kind in PROMPT_OUTCOMES:
        decided = _text(item, "decided_by")
        text = PROMPT_OUTCOMES[kind] + (f" by {fmt.who(decided, names)}" if decided else "")
        step.details = [d for d in step.details if d[0] != "Approval"] + [("Approval", text[:1].upper() + text[1:])]


def _session_step(item: ReviewedEntry, who: str) -> Step:
    kind = item.entry.kind
    step = Step(
        at=item.entry.at,
        kind="note" if kind in (K.NOTE, K.REVIEW_NOTE) else ("review" if kind == K.REVIEW_COMPLETED else "session"),
        who=who,
        what=sentence(kind, who),
        endpoint=item.endpoint,
        withheld=item.whole_redacted,
    )
    if item.whole_redacted:
        return step
    if kind == K.SESSION_OPENED:
        reason = _text(item, "reason")
        step.what += f" on {item.endpoint}" + (f": {reason}" if reason else "")
    elif kind == K.SESSION_CLOSED:
        reason = _text(item, "reason")
        step.what += f": {reason}" if reason else ""
    elif kind in (K.NOTE, K.REVIEW_NOTE):
        step.found = _text(item, "text")
    elif kind == K.SESSION_FOLLOW_UP_SCHEDULED:
        at = _text(item, "at")
        note = _text(item, "note")
        step.what += f" for {fmt.value('at', at)}" if at else ""
        step.found = note
    return step


def record_story(record: SharedRecord) -> Story:
    """The record as a story: steps in the order they began, each with who, what and how it ended."""
    names = _names(record)
    steps: list[Step] = []
    by_action: dict[object, Step] = {}
    for item in record.items:
        entry = item.entry
        who = fmt.who(entry.actor, names)
        step: Step | None = None
        if entry.action_id:
            step = by_action.get(entry.action_id)
            if step is None:
                action = entry.action
                requester = f"user:{action.requested_by.get_username()}" if action is not None else entry.actor
                step = Step(
                    at=entry.at,
                    kind="check",
                    who=fmt.who(requester, names),
                    what="A check (its details were withheld after review)" if item.whole_redacted else _describe(item),
                    endpoint=item.endpoint,
                    withheld=item.whole_redacted,
                )
                by_action[entry.action_id] = step
                steps.append(step)
            _action_step(step, item, names)
        elif entry.kind in STORY_KINDS:
            step = _session_step(item, who)
            steps.append(step)
        if step is not None:
            for n in item.notes:
                step.notes.append(Note(by=fmt.who(n.entry.actor, names), at=n.entry.at, text=_text(n, "text")))
    reviews = []
    for s in record.sessions:
        status = review_status(session=s)
        if status.reviewed_at is not None:
            where = f" ({s.endpoint.hostname})" if len(record.sessions) > 1 else ""
            reviews.append(f"{status.reviewed_by}, {fmt.when(status.reviewed_at)}{where}")
    incident = record.incident
    return Story(
        title=record.title,
        client=record.client,
        endpoints=record.endpoints,
        technicians=sorted({names.get(t, t) for t in record.technicians}),
        reviews=reviews,
        steps=steps,
        summary=incident.summary if incident is not None else "",
        status=incident.get_status_display() if incident is not None else "",
        valid_until=fmt.when(record.link.expires_at) if record.link is not None else "",
        generated=fmt.when(record.generated_at),
        redacted=record.redaction_count > 0,
        names=names,
    )
