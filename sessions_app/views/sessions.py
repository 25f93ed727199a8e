"""Console pages for support sessions: open, run, watch, cancel, notes, follow-up, close.

Views validate with the forms of sessions_app/forms (the API's limits), then call a service;
every POST redirects back to the session (PRG). A refused request (any ``AppError``) comes
back as a message on the session page, prefixed with what was refused; nothing changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from bridge import health
from caisey.console import get_or_404, member_required, operator_required
from caisey.errors import AppError, Rejected
from caisey_agent.protocol import ACTION_KINDS, CATEGORIES
from endpoints import access
from endpoints import selectors as endpoint_selectors
from endpoints.models import Presence
from sessions_app.forms.sessions import (
    ActionRunForm,
    BatchForm,
    FollowUpForm,
    NoteForm,
    SessionCloseForm,
    SessionOpenForm,
    TicketForm,
)
from sessions_app.kinds import TranscriptKind
from sessions_app.models import ACTION_LIVE, SessionStatus
from sessions_app.selectors import actions as action_selectors
from sessions_app.selectors import approvals as approval_selectors
from sessions_app.selectors import followups as followup_selectors
from sessions_app.selectors import patterns as pattern_selectors
from sessions_app.selectors import sessions as selectors
from sessions_app.services import actions, followups, sessions
from sessions_app.services.step_up import STEP_UP_KINDS


def _back(session_id) -> HttpResponse:
    return redirect("console:session_detail", session_id=session_id)


@contextlib.contextmanager
def refused(request: HttpRequest, what: str = "") -> Iterator[None]:
    """A refusal becomes a message saying what was refused ("Not queued: ..."); the view then
    redirects where it wants (the session page) instead of the generic way back that
    ``caisey.console.AppErrorMiddleware`` would take."""
    try:
        yield
    except AppError as exc:
        messages.error(request, f"{what}: {exc}" if what else str(exc))


@require_POST
@operator_required
def session_open(request, endpoint_id):
    endpoint = get_or_404(endpoint_selectors.endpoint_get, endpoint_id=endpoint_id)
    session = None
    with refused(request, "Not opened"):
        form = SessionOpenForm(request.POST)
        data = form.valid_data()
        session = sessions.session_open(
            actor=request.user,
            endpoint=endpoint,
            reason=data["reason"],
            wake=not data["no_wake"],
            ticket=data["ticket"],
        )
    if session is None:
        return redirect("console:endpoint_detail", endpoint_id=endpoint.pk)
    return _back(session.pk)


@member_required
def session_detail(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    endpoint = session.endpoint
    figures = health.health_for([endpoint.pk])[endpoint.pk]
    connectivity = health.connectivity_of(endpoint, figures)
    return render(
        request,
        "console/session_detail.html",
        {
            "session": session,
            "ticket": endpoint_selectors.ticket_link(
                endpoint_selectors.tenant_ticket_template(tenant_id=session.tenant_id), session.ticket
            ),
            "endpoint": endpoint,
            "presence": connectivity.state.value,
            "connectivity": connectivity,
            "offline": connectivity.state == Presence.OFFLINE,
            "unreachable": _unreachable(connectivity),
            "context": endpoint.machine_context,
            "health": figures,
            "actions": list(action_selectors.session_actions(session=session)),
            "live_statuses": [s.value for s in ACTION_LIVE],
            "transcript": selectors.session_transcript(session=session),
            "prompt_cards": approval_selectors.session_prompt_cards(session=session),
            "prompt_stats": approval_selectors.prompt_stats_for_group(client_group_id=endpoint.client_group_id),
            "follow_ups": followup_selectors.session_follow_ups(session=session),
            "patterns": pattern_selectors.prompt_patterns(
                endpoint_id=endpoint.pk, client_group_id=endpoint.client_group_id
            ),
            "kinds": ACTION_KINDS.values(),
            "lazy_interval_s": settings.CAISEY["HEARTBEAT_LAZY_S"],
            "categories": CATEGORIES,
            "is_open": session.status == SessionStatus.OPEN,
            "can_operate": request.membership.can_operate,
            "K": TranscriptKind,
        },
    )


@require_POST
@operator_required
def action_run(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    with refused(request, "Not queued"):
        form = ActionRunForm(request.POST)
        kind = form.valid_data()["kind"]
        actions.action_request(
            actor=request.user,
            session=session,
            kind=kind,
            params=form.params(),
            expires_in=form.expires_in(),
            wake=form.wake_choice(),
            step_up=access.step_up_require(request) if kind in STEP_UP_KINDS else None,
        )
    return _back(session.pk)


@require_POST
@operator_required
def batch_run(request, session_id):
    """A batch from the queued-steps form: lines of `kind key=value ...`."""
    session = get_or_404(selectors.session_get, session_id=session_id)
    with refused(request, "Batch not queued"):
        items = BatchForm(request.POST).items()
        risky = any(kind in STEP_UP_KINDS for kind, _ in items)
        actions.batch_request(
            actor=request.user,
            session=session,
            items=items,
            step_up=access.step_up_require(request) if risky else None,
        )
    return _back(session.pk)


@require_POST
@operator_required
def action_cancel(request, session_id, action_id):
    action = get_or_404(action_selectors.action_get, action_id=action_id, session_id=session_id)
    with refused(request, "Not cancelled"):
        actions.action_cancel(actor=request.user, action=action)
    return _back(session_id)


@require_POST
@operator_required
def action_resend(request, session_id, action_id):
    action = get_or_404(action_selectors.action_get, action_id=action_id, session_id=session_id)
    with refused(request, "Not resent"):
        actions.action_resend(actor=request.user, action=action)
    return _back(session_id)


@require_POST
@operator_required
def action_wake(request, session_id, action_id):
    action = get_or_404(action_selectors.action_get, action_id=action_id, session_id=session_id)
    with refused(request, "Not woken"):
        actions.action_wake(actor=request.user, action=action)
    return _back(session_id)


def _unreachable(connectivity: health.Connectivity) -> health.Connectivity | None:
    """The endpoint's connectivity while it is offline (an action in flight says since when), else None."""
    return connectivity if connectivity.state == Presence.OFFLINE else None


@member_required
def action_fragment(request, session_id, action_id):
    """One action's card, re-rendered when the console socket says its status changed."""
    action = get_or_404(action_selectors.action_get, action_id=action_id, session_id=session_id)
    connectivity = health.connectivity_of(action.endpoint, None)
    return render(
        request,
        "console/_action.html",
        {
            "unreachable": _unreachable(connectivity),
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
    with refused(request, "Note not saved"):
        text = NoteForm(request.POST).valid_data()["text"]
        sessions.session_add_note(actor=request.user, session=session, text=text)
    return _back(session.pk)


@require_POST
@operator_required
def session_ticket(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    with refused(request, "Ticket not saved"):
        ticket = TicketForm(request.POST).valid_data()["ticket"]
        sessions.session_set_ticket(actor=request.user, session=session, ticket=ticket)
        messages.success(request, "Ticket saved." if ticket else "Ticket removed.")
    return _back(session.pk)


@require_POST
@operator_required
def follow_up(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    with refused(request, "Follow-up not scheduled"):
        data = FollowUpForm(request.POST).valid_data()
        followups.follow_up_schedule(actor=request.user, session=session, at=data["at"], note=data["note"])
    return _back(session.pk)


@require_POST
@operator_required
def session_close(request, session_id):
    session = get_or_404(selectors.session_get, session_id=session_id)
    if session.status == SessionStatus.CLOSED:
        messages.info(request, "The session was already closed.")
        return _back(session.pk)
    with refused(request, "Not closed"):
        reason = SessionCloseForm(request.POST).valid_data()["reason"]
        sessions.session_close(actor=request.user, session=session, reason=reason)
    return _back(session.pk)


@member_required
def session_list(request):
    status = request.GET.get("status", SessionStatus.OPEN)
    if status not in SessionStatus.values and status != "all":
        raise Rejected("unknown status filter")
    session_rows = selectors.session_list(status="" if status == "all" else status)[:200]
    return render(request, "console/session_list.html", {"sessions": session_rows, "status": status})
