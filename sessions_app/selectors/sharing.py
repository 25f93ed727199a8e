"""Reading share links and the reviewed record they show.

A link shows the record as it was reviewed when the link was made: ``reviewed_upto`` holds the
last transcript index of each session then. Redactions made later still apply. The same
``SharedRecord`` is rendered as the client's page, as a PDF (sessions_app/exports/pdf.py) and as
the MSP's JSON export (sessions_app/exports/json.py). The writes (create, revoke, log a view) are
in sessions_app/services/sharing.py; the public page in sessions_app/views/share.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from endpoints.models import Tenant
from endpoints.selectors import tenant_ticket_template, ticket_link
from sessions_app.models import Incident, ShareLink, ShareLinkView, SupportSession
from sessions_app.selectors.incidents import TimelineFilters, incident_sessions, merged_timeline
from sessions_app.selectors.review import ReviewedEntry, ReviewStatus, last_index, review_status


def share_links_for(*, session: SupportSession | None = None, incident: Incident | None = None) -> QuerySet[ShareLink]:
    # Related managers of tenant-scoped models cannot scope themselves: prefetch with an explicit queryset.
    qs = ShareLink.objects.select_related("created_by", "revoked_by").prefetch_related(
        Prefetch("views", queryset=ShareLinkView.objects.order_by("-at", "-id"))
    )
    return qs.filter(session=session) if session is not None else qs.filter(incident=incident)


def share_link_get(*, link_id: uuid.UUID | str) -> ShareLink:
    return ShareLink.objects.select_related("session", "incident", "created_by", "revoked_by").get(pk=link_id)


def share_link_sessions(*, link: ShareLink) -> list[SupportSession]:
    """The sessions a link shows: those it reviewed that still belong to its subject."""
    if link.session_id:
        return [
            SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by").get(
                pk=link.session_id
            )
        ]
    if link.incident is None:  # a link has exactly one subject (check constraint share_link_one_subject)
        return []
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
    generated_at: datetime = field(default_factory=timezone.now)
    ticket_template: str = ""  # the tenant's ticket link (endpoints/tickets.py), "" for none

    @property
    def tickets(self) -> list[dict[str, str]]:
        """The PSA tickets of the record (the incident's, then each session's, once each), with
        their links under the tenant's template ("" when it has none)."""
        refs = [self.incident.ticket] if self.incident is not None else []
        refs += [s.ticket for s in self.sessions]
        seen: list[str] = []
        for ref in refs:
            if ref and ref not in seen:
                seen.append(ref)
        return [ticket_link(self.ticket_template, ref) for ref in seen]

    @property
    def endpoints(self) -> list[str]:
        return sorted({s.endpoint.hostname for s in self.sessions})

    @property
    def technicians(self) -> list[str]:
        return sorted({s.opened_by.get_username() for s in self.sessions})

    @property
    def redaction_count(self) -> int:
        return sum(1 for e in self.all_entries() if e.whole_redacted or e.part_redacted)

    def all_entries(self) -> list[ReviewedEntry]:
        """The entries shown, each followed by the review notes about it."""
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
        client = incident.client_group.name if incident.client_group is not None else ""
    else:
        only = sessions[0]
        title = f"Support session on {only.endpoint.hostname}"
        client = ""
    if not client:
        groups = {s.endpoint.client_group.name for s in sessions}
        client = ", ".join(sorted(groups))
    return SharedRecord(
        title=title,
        client=client,
        sessions=sessions,
        items=timeline.items,
        upto=upto,
        incident=incident,
        link=link,
        ticket_template=tenant_ticket_template(tenant_id=sessions[0].tenant_id if sessions else None),
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
    if incident is not None:
        sessions = incident_sessions(incident=incident)
    elif session is not None:
        sessions = [
            SupportSession.objects.select_related("endpoint", "endpoint__client_group", "opened_by").get(pk=session.pk)
        ]
    else:
        raise ValueError("a record of one session or one incident")  # a programming error, not a user's
    upto = {str(s.pk): last_index(session=s) for s in sessions}
    return _record(sessions=sessions, upto=upto, incident=incident)


@dataclass
class ShareGate:
    """Whether a link may be made now: the tenant's rule and each session's last review."""

    required: bool
    reviews: list[tuple[SupportSession, ReviewStatus]]

    @property
    def unreviewed(self) -> list[tuple[SupportSession, ReviewStatus]]:
        return [(s, r) for s, r in self.reviews if not r.current]

    @property
    def open(self) -> bool:
        return not self.required or not self.unreviewed


def share_gate(*, tenant_id: uuid.UUID | str, sessions: list[SupportSession]) -> ShareGate:
    """Call with the tenant bound; the tenant's setting is read, never assumed."""
    return ShareGate(
        required=Tenant.objects.get(pk=tenant_id).share_requires_review,
        reviews=[(s, review_status(session=s)) for s in sessions],
    )
