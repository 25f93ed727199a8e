"""The MSP's JSON export of a reviewed record, with a manifest of each entry's chain hash.

The export is exactly what the client is shown (or, for the console's export, what a link made
now would show): the story in words and every entry, plus each session's chain verification,
so an auditor can check the entries against the original transcript chain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.utils import timezone

from endpoints.selectors import ticket_link
from sessions_app.selectors.review import ReviewedEntry
from sessions_app.selectors.sharing import SharedRecord
from sessions_app.selectors.story import Story, record_story
from sessions_app.services.transcript import transcript_verify

FORMAT = "caisey.reviewed-record/1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _export_entry(item: ReviewedEntry) -> dict[str, Any]:
    e = item.entry
    return {
        "session": str(item.session.pk),
        "id": str(e.pk),
        "index": e.index,
        "kind": e.kind,
        "at": _iso(e.at),
        "actor": e.actor,
        "technician": item.technician,
        "endpoint": item.endpoint,
        "action_kind": item.action_kind or None,
        "redacted": "whole" if item.whole_redacted else ("part" if item.part_redacted else None),
        "about_index": item.about_index,
        "fields": [{"label": f.label, "path": list(f.path), "text": f.text} for f in item.fields],
    }


def _export_story(story: Story) -> dict[str, Any]:
    """The story as the client reads it (sessions_app/selectors/story.py), times in ISO."""
    return {
        "reviews": story.reviews,
        "steps": [
            {
                "at": _iso(s.at),
                "kind": s.kind,
                "who": s.who,
                "what": s.what,
                "endpoint": s.endpoint,
                "outcome": s.outcome,
                "found": s.found,
                "output": s.output,
                "details": [{"label": name, "value": value} for name, value in s.details],
                "notes": [{"by": n.by, "at": _iso(n.at), "text": n.text} for n in s.notes],
                "withheld": s.withheld,
            }
            for s in story.steps
        ],
    }


def manifest_digest(entries: list[dict[str, Any]]) -> str:
    return hashlib.sha256(
        json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def record_json(record: SharedRecord) -> dict[str, Any]:
    """The reviewed record as the client is shown it, with a manifest of each entry's chain hash.

    The manifest lists every entry shown (0..upto of each session, contiguous), so the hashes
    can be checked against the original chain; redacted entries keep the original's hash.
    """
    order = {s.pk: n for n, s in enumerate(record.sessions)}
    flat = sorted(record.all_entries(), key=lambda i: (i.entry.at, order[i.session.pk], i.entry.index))
    manifest = [
        {
            "session": str(i.session.pk),
            "id": str(i.entry.pk),
            "index": i.entry.index,
            "kind": i.entry.kind,
            "at": _iso(i.entry.at),
            "hash": i.entry.hash,
            "prev_hash": i.entry.prev_hash,
        }
        for i in flat
    ]
    chains: dict[str, dict[str, Any]] = {}
    for s in record.sessions:
        ok, bad, why = transcript_verify(session_id=s.pk)
        chains[str(s.pk)] = {"verified": ok, "problem": why or None, "at_index": bad.index if bad else None}
    incident = record.incident
    return {
        "format": FORMAT,
        "generated_at": _iso(timezone.now()),
        "title": record.title,
        "client": record.client,
        "subject": {"type": "incident", "id": str(incident.pk)}
        if incident
        else {"type": "session", "id": str(record.sessions[0].pk)},
        "link": {
            "id": str(record.link.pk),
            "created_at": _iso(record.link.created_at),
            "expires_at": _iso(record.link.expires_at),
            "revoked_at": _iso(record.link.revoked_at),
        }
        if record.link
        else None,
        "tickets": record.tickets,
        "incident": {
            "title": incident.title,
            "ticket": ticket_link(record.ticket_template, incident.ticket) if incident.ticket else None,
            "status": incident.status,
            "summary": incident.summary,
            "created_at": _iso(incident.created_at),
            "resolved_at": _iso(incident.resolved_at),
            "closed_at": _iso(incident.closed_at),
        }
        if incident
        else None,
        "sessions": [
            {
                "id": str(s.pk),
                "endpoint": s.endpoint.hostname,
                "technician": s.opened_by.get_username(),
                "opened_at": _iso(s.opened_at),
                "closed_at": _iso(s.closed_at),
                "status": s.status,
                "ticket": ticket_link(record.ticket_template, s.ticket) if s.ticket else None,
                "shows_upto": record.upto.get(str(s.pk)),
                "chain": chains[str(s.pk)],
            }
            for s in record.sessions
        ],
        "story": _export_story(record_story(record)),
        "entries": [_export_entry(i) for i in flat],
        "manifest": {"algorithm": "sha256", "entries": manifest, "sha256": manifest_digest(manifest)},
    }
