"""Reviewing a session's record before it is shared: redactions and explanatory notes (the writes).

The transcript is append-only, so review never changes an entry: a redaction is itself a
transcript entry (``review.redaction``) naming the entry it covers and where. The fragment
itself is never stored; the redaction keeps its length and a hash salted with the entry's
hash, so an auditor holding the original can check what was covered. How redactions are
applied when the record is read is in sessions_app/selectors/review.py.

Every service acts for a technician: ``acting_for`` checks the actor operates in the
session's tenant and binds that tenant for the writes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.models import AbstractUser

from caisey.actors import Actor, actor_label, actor_person
from caisey.errors import Forbidden, Rejected
from caisey.transactions import retrying_atomic
from endpoints.access import acting_for
from sessions_app.models import SupportSession, TranscriptEntry
from sessions_app.selectors.review import (
    NOTE,
    REDACTION,
    REVIEWED,
    Cover,
    last_index,
    leaf_text,
    leaves,
    redactions_for,
    review_status,
)
from sessions_app.services.transcript import transcript_append

#: Limits (characters); the console forms (sessions_app/forms/review.py) use the same.
NOTE_MAX_LENGTH = 10_000
FRAGMENT_MAX_LENGTH = 10_000  # a fragment is found in an entry's text: no longer than the longest note


class ReviewError(Rejected):
    """A review request that cannot be honoured; the message is for the technician."""


def _fragment_hash(entry: TranscriptEntry, fragment: str) -> str:
    # Salted with the entry's own hash: equal secrets in different entries hash differently.
    return hashlib.sha256((entry.hash + "\x00" + fragment).encode()).hexdigest()


def _find_all(text: str, fragment: str) -> list[list[int]]:
    spans: list[list[int]] = []
    start = 0
    while True:
        at = text.find(fragment, start)
        if at < 0:
            return spans
        spans.append([at, at + len(fragment)])
        start = at + len(fragment)


def _check_entry(session: SupportSession, entry: TranscriptEntry) -> None:
    if entry.session_id != session.pk or entry.tenant_id != session.tenant_id:
        raise Forbidden("entry of another session")
    if entry.kind == REDACTION:
        raise ReviewError("a redaction cannot itself be redacted")


@retrying_atomic()
def entry_redact(
    *,
    actor: Actor,
    session: SupportSession,
    entry: TranscriptEntry,
    text_fragment: str | None = None,
) -> TranscriptEntry:
    """Redact the whole entry (no fragment) or every occurrence of ``text_fragment`` in its text fields.

    Writes a ``review.redaction`` entry; the original entry is never touched.
    """
    with acting_for(actor, session.tenant_id):
        _check_entry(session, entry)
        cover = redactions_for(session=session).get(str(entry.pk), Cover())
        if cover.whole:
            raise ReviewError(f"entry #{entry.index} is already redacted as a whole")
        data: dict[str, Any] = {"entry_id": str(entry.pk), "index": entry.index, "entry_kind": entry.kind}
        if text_fragment is None:
            data.update({"whole": True, "content_sha256": entry.hash})
        else:
            if not text_fragment.strip():
                raise ReviewError("give the text to redact")
            ranges = []
            for path, value in leaves(entry.data):
                text = leaf_text(value)
                if text is None:
                    continue
                spans = _find_all(text, text_fragment)
                if spans:
                    ranges.append({"path": list(path), "spans": spans})
            if not ranges:
                raise ReviewError(f"that text does not occur in entry #{entry.index}")
            if all(cover.covers(tuple(r["path"]), s, e) for r in ranges for s, e in r["spans"]):
                raise ReviewError(f"that text is already redacted in entry #{entry.index}")
            data.update(
                {
                    "whole": False,
                    "ranges": ranges,
                    "occurrences": sum(len(r["spans"]) for r in ranges),
                    "fragment_length": len(text_fragment),
                    "fragment_sha256": _fragment_hash(entry, text_fragment),
                }
            )
        return transcript_append(session=session, kind=REDACTION, actor=actor_label(actor), data=data)


@retrying_atomic()
def session_redact_fragment(*, actor: Actor, session: SupportSession, text_fragment: str) -> list[TranscriptEntry]:
    """Redact ``text_fragment`` wherever it occurs in the session's record (one redaction per entry)."""
    with acting_for(actor, session.tenant_id):
        if not text_fragment.strip():
            raise ReviewError("give the text to redact")
        covers = redactions_for(session=session)
        written = []
        candidates = TranscriptEntry.objects.filter(session=session).exclude(kind=REDACTION).order_by("index")
        for entry in list(candidates):
            cover = covers.get(str(entry.pk), Cover())
            if cover.whole:
                continue
            hits = [
                (path, span)
                for path, value in leaves(entry.data)
                if (text := leaf_text(value)) is not None
                for span in _find_all(text, text_fragment)
            ]
            if hits and not all(cover.covers(path, s, e) for path, (s, e) in hits):
                written.append(entry_redact(actor=actor, session=session, entry=entry, text_fragment=text_fragment))
        if not written:
            raise ReviewError("that text does not occur (unredacted) anywhere in this session's record")
        return written


@retrying_atomic()
def review_note_add(
    *,
    actor: Actor,
    session: SupportSession,
    text: str,
    about_entry: TranscriptEntry | None = None,
) -> TranscriptEntry:
    """An explanatory note for whoever reads the shared record, optionally about one entry."""
    with acting_for(actor, session.tenant_id):
        text = text.strip()
        if not text:
            raise ReviewError("a note needs some text")
        if len(text) > NOTE_MAX_LENGTH:
            raise ReviewError(f"a note is limited to {NOTE_MAX_LENGTH:,} characters")
        data: dict[str, Any] = {"text": text}
        if about_entry is not None:
            if about_entry.session_id != session.pk:
                raise Forbidden("entry of another session")
            data.update({"about_entry": str(about_entry.pk), "about_index": about_entry.index})
        return transcript_append(session=session, kind=NOTE, actor=actor_label(actor), data=data)


def reviewer_name(user: AbstractUser) -> str:
    """How the record names a reviewer for the client: the full name, else the username."""
    return user.get_full_name().strip() or user.get_username()


@retrying_atomic()
def record_review_complete(*, actor: Actor, session: SupportSession) -> TranscriptEntry:
    """The technician has read the record as the client will see it: a ``review.completed`` entry
    names the reviewer and the last entry reviewed. Share links need a current review unless the
    tenant turned that off (sessions_app/services/sharing.py)."""
    with acting_for(actor, session.tenant_id):
        person = actor_person(actor, doing="review a record")
        session = SupportSession.objects.select_for_update().get(pk=session.pk)
        status = review_status(session=session)
        if status.current:
            raise ReviewError(f"{status.reviewed_by} already reviewed this record; nothing was added since")
        return transcript_append(
            session=session,
            kind=REVIEWED,
            actor=actor_label(actor),
            data={"reviewer": reviewer_name(person), "upto": last_index(session=session)},
        )
