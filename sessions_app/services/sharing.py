"""Share links: the client's view of a reviewed session or incident record, with no account (the writes).

A link carries a 256-bit bearer token (``shr_`` + 43 url-safe characters); only its SHA-256 is
stored (caisey/secrets.py). It expires, can be revoked at any time, and every view is logged.
Creating and revoking act for a technician (``acting_for``); logging a view is done by the
public page (sessions_app/views/public.py) with the link's tenant bound. What a link shows is
read by sessions_app/selectors/sharing.py.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from caisey import secrets
from caisey.actors import Actor, actor_label, actor_user
from caisey.errors import Forbidden
from caisey.event_hooks import OutsideEvent, event_emit
from caisey.transactions import retrying_atomic
from endpoints.access import StepUp, acting_for
from endpoints.selectors import tenant_ticket_template, ticket_link
from sessions_app.kinds import TranscriptKind
from sessions_app.models import Incident, ShareLink, ShareLinkView, SupportSession
from sessions_app.selectors.incidents import incident_sessions
from sessions_app.selectors.review import last_index
from sessions_app.selectors.sharing import share_gate, share_link_sessions
from sessions_app.services.review import ReviewError
from sessions_app.services.step_up import step_up_record
from sessions_app.services.transcript import transcript_append

TOKEN_PREFIX = "shr_"
#: How long a link may live; the console form offers days within these bounds.
MIN_EXPIRY = timedelta(minutes=5)
MAX_EXPIRY = timedelta(days=90)
LABEL_MAX_LENGTH = 200

# Transcript kinds written here.
LINK_CREATED = TranscriptKind.SHARE_LINK_CREATED
LINK_REVOKED = TranscriptKind.SHARE_LINK_REVOKED


@retrying_atomic()
def share_link_create(
    *,
    actor: Actor,
    session: SupportSession | None = None,
    incident: Incident | None = None,
    expires_in: timedelta,
    label: str = "",
    step_up: StepUp | None = None,
) -> tuple[ShareLink, str]:
    """A new link to the session's or the incident's record as it is now; returns (link, token).

    The token is shown once, to the caller; it is not stored. ``step_up``: the recent check the
    console asked for (``endpoints.access.step_up_require``), written to every shared session's
    transcript (an incident's: each of its sessions) just before the link's own entry.
    """
    if session is not None and incident is None:
        tenant_id = session.tenant_id
    elif incident is not None and session is None:
        tenant_id = incident.tenant_id
    else:
        raise ValueError("share exactly one session or one incident")  # a programming error, not a user's
    with acting_for(actor, tenant_id):
        creator = actor_user(actor)
        if creator is None:
            raise Forbidden("a share link is created by a technician")
        if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            raise ReviewError("a share link expires between 5 minutes and 90 days from now")
        if incident is not None:
            sessions = incident_sessions(incident=incident)
            if not sessions:
                raise ReviewError("add a session to the incident before sharing it")
            if len({s.endpoint.client_group_id for s in sessions}) > 1:
                raise ReviewError(
                    "the incident's sessions are on several clients' endpoints; one client may not see another's record"
                )
        else:
            assert session is not None
            sessions = [SupportSession.objects.select_related("endpoint").get(pk=session.pk)]
        _require_review(tenant_id, sessions, incident=incident is not None)
        # What was reviewed: each session's record as it stands now, before this link's own entries.
        upto = {str(s.pk): last_index(session=s) for s in sessions}
        token = secrets.new_secret(TOKEN_PREFIX)
        link = ShareLink.objects.create(
            tenant_id=tenant_id,
            session=session,
            incident=incident,
            token_hash=secrets.digest(token),
            label=label.strip()[:LABEL_MAX_LENGTH],
            created_by=creator,
            expires_at=timezone.now() + expires_in,
            reviewed_upto=upto,
        )
        for s in sessions:
            if step_up is not None:
                step_up_record(actor=actor, session=s, step_up=step_up, what="share link")
            transcript_append(
                session=s,
                kind=LINK_CREATED,
                actor=actor_label(actor),
                data={
                    "link": str(link.pk),
                    "incident": str(incident.pk) if incident else None,
                    "expires_at": link.expires_at.isoformat(),
                    "shows_upto": upto[str(s.pk)],
                },
            )
        return link, token


def _require_review(tenant_id: object, sessions: list[SupportSession], *, incident: bool) -> None:
    """Unless the tenant turned it off, every session shared must have a current review."""
    gate = share_gate(tenant_id=str(tenant_id), sessions=sessions)
    if gate.open:
        return
    problems = []
    for s, status in gate.unreviewed:
        where = f"the session on {s.endpoint.hostname}" if incident else "this record"
        if status.index is None:
            problems.append(f"{where} has not been reviewed")
        else:
            n = status.changed_since
            problems.append(
                f"{where} changed after {status.reviewed_by} reviewed it ({n} new entr{'y' if n == 1 else 'ies'})"
            )
    raise ReviewError(
        "; ".join(problems) + ". Review the record and mark it reviewed before sharing it "
        "(your tenant requires a review before a record is shared)"
    )


@retrying_atomic()
def share_link_revoke(*, actor: Actor, link: ShareLink) -> ShareLink:
    with acting_for(actor, link.tenant_id):
        now, by = timezone.now(), actor_user(actor)
        changed = ShareLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(revoked_at=now, revoked_by=by)
        if not changed:
            raise ReviewError("this link was already revoked")
        link.refresh_from_db(fields=["revoked_at", "revoked_by"])
        for s in share_link_sessions(link=link):
            transcript_append(session=s, kind=LINK_REVOKED, actor=actor_label(actor), data={"link": str(link.pk)})
        return link


@transaction.atomic
def share_link_record_view(*, link: ShareLink, ip: str, user_agent: str, format: str = "page") -> ShareLinkView:
    """Log one view of a link, with its ``share_link.viewed`` webhook event in the same transaction;
    called by the public page with the link's tenant bound."""
    view = ShareLinkView.objects.create(
        link=link, ip=(ip or "unknown")[:64], user_agent=(user_agent or "")[:500], format=format[:10]
    )
    subject = SupportSession.objects if link.session_id else Incident.objects
    ticket = subject.filter(pk=link.session_id or link.incident_id).values_list("ticket", flat=True).first() or ""
    template = tenant_ticket_template(tenant_id=link.tenant_id) if ticket else ""
    event_emit(
        [
            OutsideEvent(
                tenant_id=link.tenant_id,
                type="share_link.viewed",
                at=view.at,
                data={
                    "share_link": {
                        "id": str(link.pk),
                        "label": link.label,
                        "session": str(link.session_id) if link.session_id else None,
                        "incident": str(link.incident_id) if link.incident_id else None,
                        "expires_at": link.expires_at.isoformat(),
                        "ticket": ticket_link(template, ticket) if ticket else None,
                    },
                    "format": view.format,
                    "address": view.ip,
                    "user_agent": view.user_agent,
                },
            )
        ]
    )
    return view
