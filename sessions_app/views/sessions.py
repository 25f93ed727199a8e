"""Console pages for support sessions: open, run, watch, cancel, notes, follow-up, close.

Views parse and authorise, then call a service; every POST redirects back (PRG), and
errors come back as messages on the page, never as a changed state.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from bridge import health
from caisey.console import get_or_404, member_required, operator_required, posted_datetime
from caisey_agent.protocol import ACTION_KINDS, CATEGORIES
from endpoints import selectors as endpoint_selectors
from endpoints.models import Presence
from sessions_app.models import ACTION_LIVE, SessionStatus
from sessions_app.selectors import sessions as selectors
from sessions_app.services import actions as services


def _back(session):
    return redirect("console:session_detail", session_id=session.pk)


@require_POST
@operator_required
def session_open(request, endpoint_id):
    endpoint = get_or_404(endpoint_selectors.endpoint_get, endpoint_id=endpoint_id)
    try:
        session = services.session_open(actor=request.user, endpoint=endpoint, reason=request.POST.get("reason", ""))
    except services.SessionError as exc:
        messages.error(request, f"Not opened: {exc}")
        return redirect("console:endpoint_detail", endpoint_id=endpoint.pk)
    return _back(session)


@member_required
def session_detail(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    endpoint = session.endpoint
    figures = health.health_for([endpoint.pk])[endpoint.pk]
    connectivity = health.connectivity(endpoint, figures)
    actions = list(selectors.session_actions(session=session))
    return render(
        request,
        "console/session_detail.html",
        {
            "session": session,
            "endpoint": endpoint,
            "presence": connectivity.value,
            "offline": connectivity == Presence.OFFLINE,
            "health": figures,
            "actions": actions,
            "live_statuses": [s.value for s in ACTION_LIVE],
            "transcript": selectors.session_transcript(session=session),
            "prompts": selectors.session_prompts(session=session),
            "prompt_stats": selectors.prompt_stats_for_group(client_group_id=endpoint.client_group_id),
            "unanswered_by_hour": selectors.unanswered_by_hour(endpoint_id=endpoint.pk),
            "kinds": ACTION_KINDS.values(),
            "categories": CATEGORIES,
            "is_open": session.status == SessionStatus.OPEN,
            "can_operate": request.membership.can_operate,
        },
    )


def _params_from(post, kind_name: str) -> dict:
    spec = ACTION_KINDS.get(kind_name)
    if spec is None:
        return {}
    return {p.name: post.get(f"{kind_name}__{p.name}", "") for p in spec.params}


def _expiry_from(post) -> timedelta | None:
    hours = post.get("expires_hours", "").strip()
    if not hours:
        return None
    try:
        value = float(hours)
    except ValueError:
        raise services.SessionError("the expiry must be a number of hours") from None
    if not 0 < value <= 24 * 14:
        raise services.SessionError("the expiry must be between a minute and 14 days")
    return timedelta(hours=value)


@require_POST
@operator_required
def action_run(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    kind = request.POST.get("kind", "")
    try:
        services.action_request(
            actor=request.user,
            session=session,
            kind=kind,
            params=_params_from(request.POST, kind),
            expires_in=_expiry_from(request.POST),
        )
    except services.SessionError as exc:
        messages.error(request, f"Not queued: {exc}")
    return _back(session)


@require_POST
@operator_required
def batch_run(request, session_id):
    """A batch from the queued-steps form: lines of `kind key=value ...`."""
    session = get_or_404(selectors.session_get, session_id=session_id)
    items = []
    try:
        for line in request.POST.get("steps", "").splitlines():
            if not line.strip():
                continue
            kind, *pairs = line.split()
            params = {}
            for pair in pairs:
                if "=" not in pair:
                    raise services.SessionError(f"expected key=value, got {pair!r}")
                key, value = pair.split("=", 1)
                params[key] = value
            items.append((kind, params))
        services.batch_request(actor=request.user, session=session, items=items)
    except services.SessionError as exc:
        messages.error(request, f"Batch not queued: {exc}")
    return _back(session)


@require_POST
@operator_required
def action_cancel(request, session_id, action_id):
    action = get_or_404(selectors.action_get, action_id=action_id, session_id=session_id)
    try:
        services.action_cancel(actor=request.user, action=action)
    except services.SessionError as exc:
        messages.error(request, f"Not cancelled: {exc}")
    return _back(action.session)


@require_POST
@operator_required
def action_resend(request, session_id, action_id):
    action = get_or_404(selectors.action_get, action_id=action_id, session_id=session_id)
    try:
        services.action_resend(actor=request.user, action=action)
    except services.SessionError as exc:
        messages.error(request, f"Not resent: {exc}")
    return _back(action.session)


@member_required
def action_fragment(request, session_id, action_id):
    """One action's card, re-rendered when the console socket says its status changed."""
    action = get_or_404(selectors.action_get, action_id=action_id, session_id=session_id)
    return render(
        request,
        "console/_action.html",
        {
            "action": action,
            "live_statuses": [s.value for s in ACTION_LIVE],
            "can_operate": request.membership.can_operate,
            "session": action.session,
        },
    )


@require_POST
@operator_required
def note_add(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    try:
        services.session_add_note(actor=request.user, session=session, text=request.POST.get("text", ""))
    except services.SessionError as exc:
        messages.error(request, f"Note not saved: {exc}")
    return _back(session)


@require_POST
@operator_required
def follow_up(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    at = posted_datetime(request)
    if at is None:
        messages.error(request, "Follow-up not scheduled: give a date and time")
        return _back(session)
    try:
        services.session_schedule_follow_up(
            actor=request.user, session=session, at=at, note=request.POST.get("note", "")
        )
    except services.SessionError as exc:
        messages.error(request, f"Follow-up not scheduled: {exc}")
    return _back(session)


@require_POST
@operator_required
def session_close(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    if session.status == SessionStatus.CLOSED:
        messages.info(request, "The session was already closed.")
        return _back(session)
    try:
        services.session_close(actor=request.user, session=session, reason=request.POST.get("reason", ""))
    except services.SessionError as exc:
        messages.error(request, str(exc))
    return _back(session)


@member_required
def session_list(request):
    status = request.GET.get("status", SessionStatus.OPEN)
    if status not in SessionStatus.values and status != "all":
        raise PermissionDenied("unknown status filter")
    sessions = selectors.session_list(status="" if status == "all" else status)[:200]
    return render(request, "console/session_list.html", {"sessions": sessions, "status": status})
