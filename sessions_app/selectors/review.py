"""Reading a session's reviewed record: what redactions cover, and each entry as a reader sees it.

The transcript is append-only, so review never changes an entry. A redaction is itself a
transcript entry (``review.redaction``) that names the entry it covers and where: either the
whole entry, or character ranges within the entry's text fields (each field addressed by its
path in ``data``). Redactions are applied here, when the record is read: the console shows
technicians the original with the redacted parts marked, the client's view shows
``[redacted]`` in their place. The writes (redact, note) are in sessions_app/services/review.py.

Everything returned is plain data (dataclasses); the model rows they carry are read, never
changed, and nothing is hung on a model instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sessions_app.kinds import TranscriptKind
from sessions_app.models import SupportSession, TranscriptEntry

REDACTED = "[redacted]"
# Transcript kinds matched here.
REDACTION = TranscriptKind.REVIEW_REDACTION
NOTE = TranscriptKind.REVIEW_NOTE
ACTION_OUTPUT = TranscriptKind.ACTION_OUTPUT

# Never shown (to technicians on review pages or to clients): delivery internals, the full machine
# inventory, a diagnostic's structured duplicate of its text, and ids that mean nothing to a reader.
HIDDEN_KEYS = frozenset(
    {
        "bridge",
        "machine_context",
        "prompt",
        "batch",
        "actions",
        "incident",
        "entry_id",
        "about_entry",
        "about_index",
        "link",
        "seq",
        "ranges",
        "fragment_sha256",
        "content_sha256",
    }
)
HIDDEN_PATHS = frozenset({("result", "data"), ("result", "result_clipped"), ("result", "discarded_bytes")})
# Fields shown as blocks of preformatted text.
BLOCK_PATHS = frozenset({("data",), ("result", "text"), ("detail",), ("text",), ("error",), ("params", "command")})
# Of those, the ones people wrote (notes, prompt texts): prose, not program output.
PROSE_PATHS = frozenset({("text",), ("detail",)})
LABELS = {("data",): "output", ("result", "text"): "result", ("text",): "note"}


# --- the text fields of an entry -------------------------------------------------------------------

Path = tuple  # of str keys and int list positions


def leaves(data: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every scalar in an entry's data with its path, in order."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from leaves(value, path + (i,))
    else:
        yield path, data


def leaf_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def shown(path: Path) -> bool:
    if any(isinstance(part, str) and part in HIDDEN_KEYS for part in path):
        return False
    return not any(path[: len(hidden)] == hidden for hidden in HIDDEN_PATHS)


def label_for(path: Path) -> str:
    return LABELS.get(path) or ".".join(str(p) for p in path) or "value"


# --- what redactions cover -------------------------------------------------------------------------


@dataclass
class Cover:
    """Everything redacted in one entry, merged over all the redactions that name it."""

    whole: bool = False
    spans: dict[Path, list[tuple[int, int]]] = field(default_factory=dict)
    by: list[str] = field(default_factory=list)

    def covers(self, path: Path, start: int, end: int) -> bool:
        return self.whole or any(s <= start and end <= e for s, e in _merge(self.spans.get(path, [])))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def redactions_for(*, session: SupportSession) -> dict[str, Cover]:
    """Entry id → what is redacted in it, from every redaction in the session (whenever made)."""
    covers: dict[str, Cover] = {}
    for redaction in TranscriptEntry.objects.filter(session=session, kind=REDACTION).order_by("index"):
        data = redaction.data
        cover = covers.setdefault(str(data.get("entry_id")), Cover())
        cover.by.append(redaction.actor)
        if data.get("whole"):
            cover.whole = True
        for item in data.get("ranges") or []:
            path = tuple(item.get("path") or ())
            for span in item.get("spans") or []:
                if isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) for n in span):
                    cover.spans.setdefault(path, []).append((span[0], span[1]))
    return covers


# --- reading the reviewed record -------------------------------------------------------------------


@dataclass
class Segment:
    text: str
    redacted: bool = False


@dataclass
class Field:
    path: Path
    label: str
    segments: list[Segment]
    block: bool = False

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def redacted(self) -> bool:
        return any(s.redacted for s in self.segments)

    @property
    def prose(self) -> bool:
        return self.path in PROSE_PATHS

    @property
    def long(self) -> bool:
        text = self.text
        return len(text) > 600 or text.count("\n") > 8


@dataclass
class ReviewedEntry:
    """One entry as a reader sees it: its shown fields, with redactions applied or marked."""

    entry: TranscriptEntry
    session: SupportSession
    fields: list[Field]
    for_client: bool
    whole_redacted: bool = False
    part_redacted: bool = False
    redacted_by: list[str] = field(default_factory=list)
    notes: list[ReviewedEntry] = field(default_factory=list)
    about_index: int | None = None

    @property
    def technician(self) -> str:
        return self.session.opened_by.get_username()

    @property
    def endpoint(self) -> str:
        return self.session.endpoint.hostname

    @property
    def action_kind(self) -> str:
        return self.entry.action.kind if self.entry.action_id and self.entry.action else ""

    @property
    def is_output(self) -> bool:
        return self.entry.kind == ACTION_OUTPUT

    @property
    def css_kind(self) -> str:
        return self.entry.kind.replace(".", "-").replace("_", "-")

    @property
    def dom_id(self) -> str:
        return f"e-{self.session.pk}-{self.entry.index}"


def _segments(text: str, spans: list[tuple[int, int]], *, whole: bool, for_client: bool) -> list[Segment]:
    if whole:
        return [Segment(REDACTED if for_client else text, True)]
    out: list[Segment] = []
    cursor = 0
    for s, e in _merge([(max(0, s), min(len(text), e)) for s, e in spans if s < e]):
        if s >= len(text):
            break
        if s > cursor:
            out.append(Segment(text[cursor:s]))
        out.append(Segment(REDACTED if for_client else text[s:e], True))
        cursor = e
    if cursor < len(text) or not out:
        out.append(Segment(text[cursor:]))
    return out


def _redaction_fields(entry: TranscriptEntry, *, for_client: bool) -> list[Field]:
    data = entry.data
    what = "the whole of" if data.get("whole") else "part of"
    # The client reads no kind names; technicians see which kind of entry it was.
    kind = "" if for_client else f" ({data.get('entry_kind', 'entry')})"
    text = f"{what} entry #{data.get('index')}{kind} was redacted"
    if not for_client and not data.get("whole"):
        text += (
            f": {data.get('occurrences', '?')} occurrence(s) of a {data.get('fragment_length', '?')}-character fragment"
        )
    return [Field(("redaction",), "redaction", [Segment(text)])]


def entry_fields(entry: TranscriptEntry, cover: Cover | None, *, for_client: bool) -> list[Field]:
    if entry.kind == REDACTION:
        return _redaction_fields(entry, for_client=for_client)
    cover = cover or Cover()
    if cover.whole and for_client:
        return []
    fields = []
    for path, value in leaves(entry.data):
        text = leaf_text(value)
        if text is None or text == "" or not shown(path):
            continue
        segments = _segments(text, cover.spans.get(path, []), whole=cover.whole, for_client=for_client)
        fields.append(Field(path, label_for(path), segments, block=path in BLOCK_PATHS or "\n" in text))
    # Short facts first, then the blocks of text (outputs, results, notes).
    return sorted(fields, key=lambda f: f.block)


def reviewed_entries(
    *,
    session: SupportSession,
    upto: int | None = None,
    for_client: bool = True,
) -> list[ReviewedEntry]:
    """The session's record up to ``upto`` (inclusive; None for all), with every redaction applied.

    Redactions apply whenever they were made, also after ``upto``: a secret noticed after a link
    was shared disappears from it. For the client, whole-redacted entries keep only their time,
    actor and kind, and review notes about an entry are shown with it.
    """
    session = SupportSession.objects.select_related("endpoint", "opened_by").get(pk=session.pk)
    covers = redactions_for(session=session)
    qs = TranscriptEntry.objects.filter(session=session).select_related("action").order_by("index")
    if upto is not None:
        qs = qs.filter(index__lte=upto)
    result: list[ReviewedEntry] = []
    by_id: dict[str, ReviewedEntry] = {}
    for entry in qs:
        cover = covers.get(str(entry.pk))
        reviewed = ReviewedEntry(
            entry=entry,
            session=session,
            fields=entry_fields(entry, cover, for_client=for_client),
            for_client=for_client,
            whole_redacted=bool(cover and cover.whole),
            part_redacted=bool(cover and not cover.whole and cover.spans),
            redacted_by=list(cover.by) if cover else [],
        )
        if entry.kind == NOTE and entry.data.get("about_index") is not None:
            reviewed.about_index = entry.data.get("about_index")
            target = by_id.get(str(entry.data.get("about_entry")))
            if for_client and target is not None:
                target.notes.append(reviewed)
                continue
        by_id[str(entry.pk)] = reviewed
        result.append(reviewed)
    return result


def last_index(*, session: SupportSession) -> int:
    last = TranscriptEntry.objects.filter(session=session).order_by("-index").values_list("index", flat=True).first()
    return -1 if last is None else last


# --- whether the record was reviewed ---------------------------------------------------------------

REVIEWED = TranscriptKind.REVIEW_COMPLETED
#: Entries written after a review that do not make it stale: review itself (notes, redactions,
#: another review) and bookkeeping of sharing and incidents, which adds nothing the client reads
#: as the session's work; the step-up check that let the sharing through (written in the same
#: transaction as the link); follow-up reminders; and the bridge's connectivity periods, which the
#: bridge writes on its own while a session stays open and which carry no content of the endpoint.
#: Anything else (a command, a result, a technician's note) needs a new review.
REVIEW_NEUTRAL_KINDS = frozenset(
    {
        TranscriptKind.REVIEW_NOTE,
        TranscriptKind.REVIEW_REDACTION,
        TranscriptKind.REVIEW_COMPLETED,
        TranscriptKind.SHARE_LINK_CREATED,
        TranscriptKind.SHARE_LINK_REVOKED,
        TranscriptKind.SESSION_ADDED_TO_INCIDENT,
        TranscriptKind.SESSION_TICKET_SET,
        TranscriptKind.INCIDENT_TICKET_SET,
        TranscriptKind.SESSION_REMOVED_FROM_INCIDENT,
        TranscriptKind.IDENTITY_STEP_UP,
        TranscriptKind.SESSION_FOLLOW_UP_DUE,
        TranscriptKind.SESSION_FOLLOW_UP_OPENED,
        TranscriptKind.BRIDGE_CONNECTIVITY,
    }
)


@dataclass(frozen=True)
class ReviewStatus:
    """The last review of a session's record: by whom, when, and whether the record changed since."""

    reviewed_by: str = ""
    reviewed_at: datetime | None = None
    index: int | None = None
    changed_since: int = 0  # entries written after the review that are not review or sharing bookkeeping

    @property
    def current(self) -> bool:
        """Reviewed, and nothing the client would read was added since."""
        return self.index is not None and self.changed_since == 0


def review_status(*, session: SupportSession) -> ReviewStatus:
    last = TranscriptEntry.objects.filter(session=session, kind=REVIEWED).order_by("-index").first()
    if last is None:
        return ReviewStatus()
    changed = (
        TranscriptEntry.objects.filter(session=session, index__gt=last.index)
        .exclude(kind__in=REVIEW_NEUTRAL_KINDS)
        .count()
    )
    return ReviewStatus(
        reviewed_by=str(last.data.get("reviewer") or last.actor),
        reviewed_at=last.at,
        index=last.index,
        changed_since=changed,
    )
