"""Review and share: the technician's review page for a session, share links and their view log,
the MSP's JSON export, and the client's public page and PDF.

Console views validate their forms (sessions_app/forms/), call one service, and go back to the
page with a message (``refused`` turns a refused request into "<what was not done>: <why>").
The client's page is a public token-link page (sessions_app/views/public.py): rate limit, the
token resolved by its hash, the link's tenant bound, private headers, every view logged.
Wrong, expired and revoked tokens all get the same plain 404 page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from caisey.console import get_or_404, member_required, operator_required
from caisey.errors import AppError
from endpoints import access
from sessions_app.exports.json import record_json
from sessions_app.exports.pdf import record_pdf
from sessions_app.forms.review import NoteForm, RedactForm
from sessions_app.forms.sharing import EXPIRY_CHOICES, ShareLinkForm
from sessions_app.models import ShareLink, SupportSession, TranscriptEntry
from sessions_app.selectors import review as review_selectors
from sessions_app.selectors import sharing as sharing_selectors
from sessions_app.selectors.sessions import session_get
from sessions_app.selectors.story import record_story
from sessions_app.services import review, sharing
from sessions_app.views import public

INVALID = "share/invalid.html"


@contextlib.contextmanager
def refused(request: HttpRequest, what: str) -> Iterator[None]:
    """A refused request (any AppError: the service rolled back) becomes the message "<what>: <why>"
    on the page the view goes back to."""
    try:
        yield
    except AppError as exc:
        messages.error(request, f"{what}: {exc}")


def _back(session: SupportSession) -> HttpResponse:
    return redirect("console:session_review", session_id=session.pk)


def share_url(request: HttpRequest, token: str) -> str:
    path = reverse("share_view", args=[token])
    base = settings.CAISEY_PUBLIC_URL
    return base.rstrip("/") + path if base else request.build_absolute_uri(path)


def render_link_created(request: HttpRequest, *, link: ShareLink, token: str, back: str, subject: str) -> HttpResponse:
    """The token is shown this once and never stored; the page is not cached."""
    response = render(
        request,
        "console/review_link_created.html",
        {"link": link, "url": share_url(request, token), "back": back, "subject": subject},
    )
    response["Cache-Control"] = "no-store"
    return response


def _entry(session: SupportSession, index: int | None) -> TranscriptEntry:
    try:
        return TranscriptEntry.objects.get(session=session, index=index)
    except TranscriptEntry.DoesNotExist:
        raise Http404("no such entry") from None


def json_download(data: dict[str, Any], filename: str) -> JsonResponse:
    response = JsonResponse(data, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- the review page -------------------------------------------------------------------------------


@member_required
def session_review(request, session_id):
    session = get_or_404(session_get, session_id=session_id)
    entries = review_selectors.reviewed_entries(session=session, for_client=False)
    return render(
        request,
        "console/review.html",
        {
            "session": session,
            "endpoint": session.endpoint,
            "entries": entries,
            "redacted_count": sum(1 for e in entries if e.whole_redacted or e.part_redacted),
            "links": sharing_selectors.share_links_for(session=session),
            "gate": sharing_selectors.share_gate(tenant_id=session.tenant_id, sessions=[session]),
            "review": review_selectors.review_status(session=session),
            "expiry_choices": EXPIRY_CHOICES,
            "can_operate": request.membership.can_operate,
        },
    )


@require_POST
@operator_required
def review_redact(request, session_id):
    """Redact one entry (whole, or a piece of its text), or a piece of text everywhere in the session."""
    session = get_or_404(session_get, session_id=session_id)
    with refused(request, "Not redacted"):
        data = RedactForm(request.POST).cleaned()
        if data["scope"] == "session":
            written = review.session_redact_fragment(
                actor=request.user, session=session, text_fragment=data["fragment"]
            )
            messages.success(request, f"Redacted in {len(written)} entr{'y' if len(written) == 1 else 'ies'}.")
        else:
            entry = _entry(session, data["entry"])
            review.entry_redact(
                actor=request.user,
                session=session,
                entry=entry,
                text_fragment=None if data["whole"] else data["fragment"],
            )
            messages.success(request, f"Entry #{entry.index} redacted.")
    return _back(session)


@require_POST
@operator_required
def review_note(request, session_id):
    session = get_or_404(session_get, session_id=session_id)
    with refused(request, "Note not saved"):
        data = NoteForm(request.POST).cleaned()
        about = _entry(session, data["entry"]) if data["entry"] is not None else None
        review.review_note_add(actor=request.user, session=session, text=data["text"], about_entry=about)
    return _back(session)


@require_POST
@operator_required
def review_complete(request, session_id):
    """The review step: the technician has read the record as the client will; their name is recorded."""
    session = get_or_404(session_get, session_id=session_id)
    with refused(request, "Not marked reviewed"):
        review.record_review_complete(actor=request.user, session=session)
        messages.success(request, "Marked reviewed: you can share the record now.")
    return _back(session)


@require_POST
@operator_required
def session_share(request, session_id):
    session = get_or_404(session_get, session_id=session_id)
    with refused(request, "Not shared"):
        data = ShareLinkForm(request.POST).cleaned()
        link, token = sharing.share_link_create(
            actor=request.user,
            step_up=access.step_up_require(request),
            session=session,
            expires_in=data["expires_days"],
            label=data["label"],
        )
        return render_link_created(
            request,
            link=link,
            token=token,
            back=_back(session).url,
            subject=f"the session on {session.endpoint.hostname}",
        )
    return _back(session)


@member_required
def session_preview(request, session_id):
    session = get_or_404(session_get, session_id=session_id)
    record = sharing_selectors.current_record(session=session)
    return render(
        request,
        "share/record.html",
        {"record": record, "story": record_story(record), "preview": True, "back": _back(session).url},
    )


@member_required
def session_export(request, session_id):
    session = get_or_404(session_get, session_id=session_id)
    return json_download(record_json(sharing_selectors.current_record(session=session)), f"session-{session.pk}.json")


# --- share links (console) -------------------------------------------------------------------------


def _link_back(link: ShareLink) -> HttpResponse:
    if link.incident_id:
        return redirect("console:incident_detail", incident_id=link.incident_id)
    return redirect("console:session_review", session_id=link.session_id)


@require_POST
@operator_required
def link_revoke(request, link_id):
    link = get_or_404(sharing_selectors.share_link_get, link_id=link_id)
    with refused(request, "Not revoked"):
        sharing.share_link_revoke(actor=request.user, link=link)
        messages.success(request, "The link was revoked; it no longer opens.")
    return _link_back(link)


@member_required
def link_export(request, link_id):
    """Exactly what this link shows the client, with the manifest of entry hashes."""
    link = get_or_404(sharing_selectors.share_link_get, link_id=link_id)
    return json_download(record_json(sharing_selectors.shared_record(link=link)), f"share-{link.pk}.json")


# --- the client's page (no account) ----------------------------------------------------------------


def _log_view(*, link: ShareLink, ip: str, user_agent: str, outcome: str) -> None:
    sharing.share_link_record_view(link=link, ip=ip, user_agent=user_agent, format=outcome)


SHARE_LINKS = public.TokenLinks(
    name="share-link",
    model=ShareLink,
    token_prefix=sharing.TOKEN_PREFIX,
    rate="RATE_SHARE_PER_IP",
    invalid_template=INVALID,
    log=_log_view,
    related=("session", "incident", "tenant"),
)


@require_GET
@public.token_page(SHARE_LINKS)
def share_view(visit: public.Visit) -> HttpResponse:
    if not visit.link.is_usable:  # expired or revoked: the same page as a wrong token
        return visit.refuse(404)
    record = sharing_selectors.shared_record(link=visit.link)
    visit.log("page")
    context = {"record": record, "story": record_story(record), "token": visit.token, "preview": False}
    return render(visit.request, "share/record.html", context)


@require_GET
@public.token_page(SHARE_LINKS)
def share_pdf(visit: public.Visit) -> HttpResponse:
    if not visit.link.is_usable:
        return visit.refuse(404)
    pdf = record_pdf(sharing_selectors.shared_record(link=visit.link))
    visit.log("pdf")
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = 'attachment; filename="caisey-record.pdf"'
    return response
