"""Review and share: the technician's review page for a session, share links and their view log,
the MSP's JSON export, and the client's public page and PDF.

The public page needs no account. Its token is the authorisation: it is resolved with the
tenant scope lifted for that one lookup, then the link's tenant is bound for everything the
page reads. Wrong, expired and revoked tokens all get the same plain 404 page; every request
counts against a per-address rate limit, so tokens cannot be guessed at speed.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from caisey import ratelimit, tenancy
from caisey.console import get_or_404, member_required, operator_required
from sessions_app.models import TranscriptEntry
from sessions_app.selectors import sessions as selectors
from sessions_app.services import review, sharing

INVALID = "share/invalid.html"
EXPIRY_CHOICES = [(1, "1 day"), (3, "3 days"), (7, "7 days"), (30, "30 days"), (90, "90 days")]


def _back(session):
    return redirect("console:session_review", session_id=session.pk)


def expiry_from(post) -> timedelta:
    raw = post.get("expires_days", "7").strip() or "7"
    try:
        days = float(raw)
    except ValueError:
        raise review.ReviewError("the expiry must be a number of days") from None
    if not 0 < days <= 90:
        raise review.ReviewError("a share link expires within 90 days")
    return timedelta(days=days)


def share_url(request, token: str) -> str:
    path = reverse("share_view", args=[token])
    base = settings.CAISEY_PUBLIC_URL
    return base.rstrip("/") + path if base else request.build_absolute_uri(path)


def render_link_created(request, *, link, token: str, back: str, subject: str):
    """The token is shown this once and never stored; the page is not cached."""
    response = render(
        request,
        "console/review_link_created.html",
        {
            "link": link,
            "url": share_url(request, token),
            "back": back,
            "subject": subject,
        },
    )
    response["Cache-Control"] = "no-store"
    return response


def _entry(session, index) -> TranscriptEntry:
    try:
        return TranscriptEntry.objects.get(session=session, index=int(index))
    except (TranscriptEntry.DoesNotExist, ValueError, TypeError):
        raise Http404("no such entry") from None


# --- the review page -------------------------------------------------------------------------------


@member_required
def session_review(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    entries = review.reviewed_entries(session=session, for_client=False)
    return render(
        request,
        "console/review.html",
        {
            "session": session,
            "endpoint": session.endpoint,
            "entries": entries,
            "redacted_count": sum(1 for e in entries if e.whole_redacted or e.part_redacted),
            "links": sharing.share_links_for(session=session),
            "expiry_choices": EXPIRY_CHOICES,
            "can_operate": request.membership.can_operate,
        },
    )


@require_POST
@operator_required
def review_redact(request, session_id):
    """Redact one entry (whole, or a piece of its text), or a piece of text everywhere in the session."""
    session = get_or_404(selectors.session_get, session_id=session_id)
    fragment = request.POST.get("fragment", "")
    try:
        if request.POST.get("scope") == "session":
            written = review.session_redact_fragment(actor=request.user, session=session, text_fragment=fragment)
            messages.success(request, f"Redacted in {len(written)} entr{'y' if len(written) == 1 else 'ies'}.")
        else:
            entry = _entry(session, request.POST.get("entry"))
            whole = request.POST.get("whole") == "1"
            if not whole and not fragment:
                raise review.ReviewError("give the text to redact, or redact the whole entry")
            review.entry_redact(
                actor=request.user, session=session, entry=entry, text_fragment=None if whole else fragment
            )
            messages.success(request, f"Entry #{entry.index} redacted.")
    except review.ReviewError as exc:
        messages.error(request, f"Not redacted: {exc}")
    return _back(session)


@require_POST
@operator_required
def review_note(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    about = request.POST.get("entry", "").strip()
    try:
        review.review_note_add(
            actor=request.user,
            session=session,
            text=request.POST.get("text", ""),
            about_entry=_entry(session, about) if about else None,
        )
    except review.ReviewError as exc:
        messages.error(request, f"Note not saved: {exc}")
    return _back(session)


@require_POST
@operator_required
def session_share(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    try:
        link, token = sharing.share_link_create(
            actor=request.user,
            session=session,
            expires_in=expiry_from(request.POST),
            label=request.POST.get("label", ""),
        )
    except review.ReviewError as exc:
        messages.error(request, f"Not shared: {exc}")
        return _back(session)
    return render_link_created(
        request, link=link, token=token, back=_back(session).url, subject=f"the session on {session.endpoint.hostname}"
    )


@member_required
def session_preview(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    return render(
        request,
        "share/record.html",
        {"record": sharing.current_record(session=session), "preview": True, "back": _back(session).url},
    )


def _json_download(data: dict, filename: str) -> JsonResponse:
    response = JsonResponse(data, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@member_required
def session_export(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    return _json_download(sharing.export_record(sharing.current_record(session=session)), f"session-{session.pk}.json")


# --- share links (console) -------------------------------------------------------------------------


def _link_back(link):
    if link.incident_id:
        return redirect("console:incident_detail", incident_id=link.incident_id)
    return redirect("console:session_review", session_id=link.session_id)


@require_POST
@operator_required
def link_revoke(request, link_id):
    link = get_or_404(sharing.share_link_get, link_id=link_id)
    try:
        sharing.share_link_revoke(actor=request.user, link=link)
        messages.success(request, "The link was revoked; it no longer opens.")
    except review.ReviewError as exc:
        messages.error(request, f"Not revoked: {exc}")
    return _link_back(link)


@member_required
def link_export(request, link_id):
    """Exactly what this link shows the client, with the manifest of entry hashes."""
    link = get_or_404(sharing.share_link_get, link_id=link_id)
    return _json_download(sharing.export_record(sharing.shared_record(link=link)), f"share-{link.pk}.json")


# --- the client's page (no account) ----------------------------------------------------------------


def _client(request) -> tuple[str, str]:
    return request.META.get("REMOTE_ADDR", "unknown"), request.META.get("HTTP_USER_AGENT", "")


def _private(response):
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _open(request, token: str):
    """(link, None) for a usable link, else (None, the plain refusal page)."""
    ip, _ = _client(request)
    limit, window = settings.CAISEY.get("RATE_SHARE_PER_IP", (60, 60))
    if not ratelimit.hit("share-link", ip, limit=limit, window=window):
        return None, _private(render(request, INVALID, {"rate_limited": True}, status=429))
    link = sharing.share_link_resolve(token=token)
    if link is None:
        return None, _private(render(request, INVALID, status=404))
    return link, None


@never_cache
@require_GET
def share_view(request, token: str):
    link, refusal = _open(request, token)
    if refusal is not None:
        return refusal
    ip, agent = _client(request)
    with tenancy.system(), tenancy.bind(link.tenant_id):  # a public page: the link names the tenant
        record = sharing.shared_record(link=link)
        sharing.share_link_record_view(link=link, ip=ip, user_agent=agent, format="page")
        response = render(request, "share/record.html", {"record": record, "token": token, "preview": False})
    return _private(response)


@never_cache
@require_GET
def share_pdf(request, token: str):
    link, refusal = _open(request, token)
    if refusal is not None:
        return refusal
    ip, agent = _client(request)
    with tenancy.system(), tenancy.bind(link.tenant_id):  # a public page: the link names the tenant
        record = sharing.shared_record(link=link)
        pdf = sharing.record_pdf(record)
        sharing.share_link_record_view(link=link, ip=ip, user_agent=agent, format="pdf")
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = 'attachment; filename="caisey-record.pdf"'
    return _private(response)
