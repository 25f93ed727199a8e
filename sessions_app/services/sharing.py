"""Share links: the client's view of a reviewed session or incident record, with no account.

A link carries a 256-bit bearer token (``shr_`` + 43 url-safe characters); only its
SHA-256 is stored. It expires, can be revoked at any time, and every view is logged.
``share_link_resolve`` answers None for a wrong, expired or revoked token alike, so
callers cannot tell (and cannot tell anyone) which it was.

A link shows the record as it was reviewed when the link was made: ``reviewed_upto``
holds the last transcript index of each session then. Redactions made later still
apply. The same reviewed record is rendered as the client's page, as a PDF, and as
the MSP's JSON export with a manifest of the entries' chain hashes.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import timedelta
from xml.sax.saxutils import escape

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from caisey import secrets, tenancy
from endpoints.services import actor_label
from sessions_app.models import Incident, ShareLink, ShareLinkView, SupportSession
from sessions_app.services.incidents import TimelineFilters, incident_sessions, merged_timeline
from sessions_app.services.review import REDACTED, ReviewedEntry, ReviewError, last_index
from sessions_app.services.transcript import transcript_append, transcript_verify

TOKEN_PREFIX = "shr_"
MIN_EXPIRY = timedelta(minutes=5)
MAX_EXPIRY = timedelta(days=90)
EXPORT_FORMAT = "caisey.reviewed-record/1"


def _require_operator(actor, tenant_id) -> None:
    membership = getattr(actor, "membership", None)
    if membership is None or membership.tenant_id != tenant_id or not membership.can_operate:
        raise PermissionDenied("only the tenant's technicians and admins can share a record")


# --- services --------------------------------------------------------------------------------------


def _client_groups(sessions: list[SupportSession]) -> set:
    return {s.endpoint.client_group_id for s in sessions}


@transaction.atomic
def share_link_create(
    *,
    actor,
    session: SupportSession | None = None,
    incident: Incident | None = None,
    expires_in: timedelta,
    label: str = "",
) -> tuple[ShareLink, str]:
    """A new link to the session's or the incident's record as it is now; returns (link, token).

    The token is shown once, to the caller; it is not stored.
    """
    if (session is None) == (incident is None):
        raise ValueError("share exactly one session or one incident")
    subject = session or incident
    _require_operator(actor, subject.tenant_id)
    if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
        raise ReviewError("a share link expires between 5 minutes and 90 days from now")
    if incident is not None:
        sessions = incident_sessions(incident=incident)
        if not sessions:
            raise ReviewError("add a session to the incident before sharing it")
        if len(_client_groups(sessions)) > 1:
            raise ReviewError(
                "the incident's sessions are on several clients' endpoints; one client may not see another's record"
            )
    else:
        sessions = [SupportSession.all_tenants.select_related("endpoint").get(pk=session.pk)]
    # What was reviewed: each session's record as it stands now, before this link's own entries.
    upto = {str(s.pk): last_index(session=s) for s in sessions}
    token = secrets.new_secret(TOKEN_PREFIX)
    link = ShareLink.all_tenants.create(
        tenant_id=subject.tenant_id,
        session=session,
        incident=incident,
        token_hash=secrets.digest(token),
        label=label.strip()[:200],
        created_by=actor,
        expires_at=timezone.now() + expires_in,
        reviewed_upto=upto,
    )
    for s in sessions:
        transcript_append(
            session=s,
            kind="share.link_created",
            actor=actor_label(actor),
            data={
                "link": str(link.pk),
                "incident": str(incident.pk) if incident else None,
                "expires_at": link.expires_at.isoformat(),
                "shows_upto": upto[str(s.pk)],
            },
        )
    return link, token


@transaction.atomic
def share_link_revoke(*, actor, link: ShareLink) -> ShareLink:
    _require_operator(actor, link.tenant_id)
    now = timezone.now()
    changed = ShareLink.all_tenants.filter(pk=link.pk, revoked_at__isnull=True).update(revoked_at=now, revoked_by=actor)
    if not changed:
        raise ReviewError("this link was already revoked")
    link.revoked_at, link.revoked_by = now, actor
    for s in share_link_sessions(link=link):
        transcript_append(session=s, kind="share.link_revoked", actor=actor_label(actor), data={"link": str(link.pk)})
    return link


def share_link_resolve(*, token: str) -> ShareLink | None:
    """The usable link for a token, or None: wrong, expired and revoked look the same."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or not 20 <= len(token) <= 100:
        return None
    with tenancy.system():
        link = (
            ShareLink.objects.select_related("session", "incident", "tenant")
            .filter(token_hash=secrets.digest(token))
            .first()
        )
    if link is None or not secrets.matches(token, link.token_hash) or not link.is_usable:
        return None
    return link


def share_link_record_view(*, link: ShareLink, ip: str, user_agent: str, format: str = "page") -> ShareLinkView:
    return ShareLinkView.all_tenants.create(
        link=link, ip=(ip or "unknown")[:64], user_agent=(user_agent or "")[:500], format=format[:10]
    )


# --- selectors -------------------------------------------------------------------------------------


def share_links_for(*, session: SupportSession | None = None, incident: Incident | None = None):
    # Related managers of tenant-scoped models cannot scope themselves: prefetch with an explicit queryset.
    qs = ShareLink.objects.select_related("created_by", "revoked_by").prefetch_related(
        Prefetch("views", queryset=ShareLinkView.objects.order_by("-at", "-id"))
    )
    return qs.filter(session=session) if session is not None else qs.filter(incident=incident)


def share_link_get(*, link_id) -> ShareLink:
    return ShareLink.objects.select_related("session", "incident", "created_by", "revoked_by").get(pk=link_id)


def share_link_sessions(*, link: ShareLink) -> list[SupportSession]:
    """The sessions a link shows: those it reviewed that still belong to its subject."""
    if link.session_id:
        return [
            SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by").get(
                pk=link.session_id
            )
        ]
    return [s for s in incident_sessions(incident=link.incident) if str(s.pk) in link.reviewed_upto]


@dataclass
class SharedRecord:
    """A reviewed record as the client sees it (or, for the console's preview, would see it)."""

    title: str
    client: str
    sessions: list[SupportSession]
    items: list[ReviewedEntry]
    upto: dict[str, int]
    incident: Incident | None = None
    link: ShareLink | None = None
    generated_at: object = field(default_factory=timezone.now)

    @property
    def endpoints(self) -> list[str]:
        return sorted({s.endpoint.hostname for s in self.sessions})

    @property
    def technicians(self) -> list[str]:
        return sorted({s.opened_by.get_username() for s in self.sessions})

    @property
    def redaction_count(self) -> int:
        return sum(1 for e in self._flat() if e.whole_redacted or e.part_redacted)

    def _flat(self) -> list[ReviewedEntry]:
        out = []
        for item in self.items:
            out.append(item)
            out.extend(item.notes)
        return out


def _record(
    *,
    sessions: list[SupportSession],
    upto: dict[str, int],
    incident: Incident | None = None,
    link: ShareLink | None = None,
    for_client: bool = True,
) -> SharedRecord:
    timeline = merged_timeline(sessions=sessions, filters=TimelineFilters(), upto=upto, for_client=for_client)
    if incident is not None:
        title = incident.title
        client = incident.client_group.name if incident.client_group_id else ""
    else:
        only = sessions[0]
        title = f"Support session on {only.endpoint.hostname}"
        client = ""
    if not client:
        groups = {s.endpoint.client_group.name for s in sessions}
        client = ", ".join(sorted(groups))
    return SharedRecord(
        title=title, client=client, sessions=sessions, items=timeline.items, upto=upto, incident=incident, link=link
    )


def shared_record(*, link: ShareLink) -> SharedRecord:
    """What a share link shows; call with the link's tenant bound."""
    sessions = share_link_sessions(link=link)
    return _record(
        sessions=sessions,
        upto={k: v for k, v in link.reviewed_upto.items()},
        incident=link.incident if link.incident_id else None,
        link=link,
    )


def current_record(*, session: SupportSession | None = None, incident: Incident | None = None) -> SharedRecord:
    """What a link made now would show (the console's preview and its export)."""
    sessions = (
        incident_sessions(incident=incident)
        if incident is not None
        else [
            SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by").get(pk=session.pk)
        ]
    )
    upto = {str(s.pk): last_index(session=s) for s in sessions}
    return _record(sessions=sessions, upto=upto, incident=incident)


# --- JSON export -----------------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _export_entry(item: ReviewedEntry) -> dict:
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


def manifest_digest(entries: list[dict]) -> str:
    return hashlib.sha256(
        json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def export_record(record: SharedRecord) -> dict:
    """The reviewed record as the client is shown it, with a manifest of each entry's chain hash.

    The manifest lists every entry shown (0..upto of each session, contiguous), so the hashes
    can be checked against the original chain; redacted entries keep the original's hash.
    """
    order = {s.pk: n for n, s in enumerate(record.sessions)}
    flat = sorted(record._flat(), key=lambda i: (i.entry.at, order[i.session.pk], i.entry.index))
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
    chains = {}
    for s in record.sessions:
        ok, bad, why = transcript_verify(session_id=s.pk)
        chains[str(s.pk)] = {"verified": ok, "problem": why or None, "at_index": bad.index if bad else None}
    incident = record.incident
    return {
        "format": EXPORT_FORMAT,
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
        "incident": {
            "title": incident.title,
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
                "shows_upto": record.upto.get(str(s.pk)),
                "chain": chains[str(s.pk)],
            }
            for s in record.sessions
        ],
        "entries": [_export_entry(i) for i in flat],
        "manifest": {"algorithm": "sha256", "entries": manifest, "sha256": manifest_digest(manifest)},
    }


# --- PDF -------------------------------------------------------------------------------------------


def _cp1252(value: str) -> str:
    """The standard PDF fonts cover Windows-1252; anything else prints as '?' rather than vanishing."""
    return value.encode("cp1252", "replace").decode("cp1252")


def _pdf_text(value: str) -> str:
    return escape(_cp1252(value))


def _pdf_block(value: str) -> str:
    return _pdf_text(value).replace("\n", "<br/>").replace("  ", "&nbsp; ")


def record_pdf(record: SharedRecord) -> bytes:
    """The reviewed record as a plain, readable PDF: title, client, endpoints, then every entry."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer

    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    meta = ParagraphStyle("meta", parent=body, fontSize=8.5, textColor=colors.HexColor("#5b6475"), spaceAfter=1)
    head = ParagraphStyle("entry", parent=body, fontSize=9.5, spaceBefore=5, spaceAfter=1)
    mono = ParagraphStyle(
        "mono",
        parent=body,
        fontName="Courier",
        fontSize=8,
        leading=9.6,
        leftIndent=8,
        backColor=colors.HexColor("#f1f3f6"),
        borderPadding=3,
        spaceAfter=3,
    )
    note = ParagraphStyle(
        "note",
        parent=body,
        fontSize=9,
        leftIndent=14,
        textColor=colors.HexColor("#1d2330"),
        backColor=colors.HexColor("#fff7e0"),
        borderPadding=3,
    )

    def stamp(value) -> str:
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")

    story = [Paragraph(_pdf_text(record.title), styles["Title"])]
    facts = [
        ("Client", record.client or "–"),
        ("Endpoints", ", ".join(record.endpoints)),
        ("Technicians", ", ".join(record.technicians)),
    ]
    if record.incident is not None:
        facts.insert(1, ("Status", record.incident.get_status_display()))
    if record.link is not None:
        facts.append(("Link expires", stamp(record.link.expires_at)))
    facts.append(("Generated", stamp(record.generated_at)))
    for name, value in facts:
        story.append(Paragraph(f"<b>{_pdf_text(name)}:</b> {_pdf_text(value)}", body))
    if record.incident is not None and record.incident.summary:
        story += [
            Spacer(1, 4 * mm),
            Paragraph("Summary", styles["Heading2"]),
            Paragraph(_pdf_block(record.incident.summary), body),
        ]
    if record.redaction_count:
        story.append(
            Paragraph(
                f"{record.redaction_count} entr{'y has' if record.redaction_count == 1 else 'ies have'} been reviewed and "
                f"redacted; removed text is shown as {REDACTED}.",
                meta,
            )
        )
    story += [Spacer(1, 4 * mm), Paragraph("Record", styles["Heading2"])]

    def entry_flowables(item: ReviewedEntry, *, is_note: bool = False) -> list:
        e = item.entry
        what = f"{e.kind}{' · ' + item.action_kind if item.action_kind else ''}"
        line = (
            f"<b>{_pdf_text(stamp(e.at))}</b> &nbsp; {_pdf_text(what)} &nbsp; "
            f"<font color='#5b6475'>by {_pdf_text(e.actor)} · {_pdf_text(item.endpoint)} "
            f"(#{e.index})</font>"
        )
        out = [Paragraph(line, head)]
        if item.whole_redacted:
            out.append(
                Paragraph(f"<i>{REDACTED}</i> (this entry was withheld after review)", note if is_note else body)
            )
        for f in item.fields:
            text = "".join(s.text for s in f.segments)
            if f.prose:
                out.append(Paragraph(_pdf_block(text), note if is_note else body))
            elif f.block:
                out.append(Paragraph(f"<font color='#5b6475'>{_pdf_text(f.label)}</font>", meta))
                out.append(Paragraph(_pdf_block(text), note if is_note else mono))
            else:
                out.append(
                    Paragraph(
                        f"<font color='#5b6475'>{_pdf_text(f.label)}:</font> {_pdf_text(text)}",
                        note if is_note else body,
                    )
                )
        return out

    for item in record.items:
        flowables = entry_flowables(item)
        for n in item.notes:
            flowables += [Paragraph("Reviewer's note:", meta)] + entry_flowables(n, is_note=True)
        story.append(KeepTogether(flowables) if sum(len(f.text) for f in item.fields) < 1500 else flowables[0])
        if sum(len(f.text) for f in item.fields) >= 1500:
            story.extend(flowables[1:])
    if not record.items:
        story.append(Paragraph("No entries.", body))

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=_pdf_text(record.title),
        author="Caisey",
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
    )

    def footer(canvas, doc_) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#5b6475"))
        canvas.drawString(16 * mm, 9 * mm, _cp1252(f"{record.title} · reviewed record")[:120])
        canvas.drawRightString(A4[0] - 16 * mm, 9 * mm, f"page {doc_.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
