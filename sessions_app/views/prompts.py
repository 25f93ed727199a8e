"""Console actions on approval prompts: cancel, cancel-and-reissue, resend, escalate, run with a
recorded approval, follow-up; and one prompt's card, re-rendered live."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from sessions_app.forms.sessions import FollowUpForm
from sessions_app.selectors import approvals as approval_selectors
from sessions_app.selectors import sessions as selectors
from sessions_app.services import approvals as prompts
from sessions_app.services import sessions
from sessions_app.views.sessions import refused


def _prompt(session_id, prompt_id):
    return get_or_404(approval_selectors.prompt_get, prompt_id=prompt_id, session_id=session_id)


def _back(session_id):
    return redirect("console:session_detail", session_id=session_id)


def _prompt_action(request, session_id, prompt_id, func, done: str, **kwargs):
    prompt = _prompt(session_id, prompt_id)
    with refused(request):
        func(actor=request.user, prompt=prompt, **kwargs)
        messages.success(request, done)
    return _back(session_id)


@require_POST
@operator_required
def prompt_cancel(request, session_id, prompt_id):
    return _prompt_action(request, session_id, prompt_id, prompts.prompt_cancel, "Prompt cancelled.")


@require_POST
@operator_required
def prompt_reissue(request, session_id, prompt_id):
    return _prompt_action(
        request,
        session_id,
        prompt_id,
        prompts.prompt_reissue,
        "Prompt reissued; the old one is superseded and can no longer be approved.",
    )


@require_POST
@operator_required
def prompt_resend(request, session_id, prompt_id):
    return _prompt_action(request, session_id, prompt_id, prompts.prompt_resend, "Prompt queued again.")


@require_POST
@operator_required
def prompt_escalate(request, session_id, prompt_id):
    return _prompt_action(
        request,
        session_id,
        prompt_id,
        prompts.prompt_escalate,
        "Approval link sent to the client's designated approver.",
        base_url=prompts.public_base_url(request),
    )


@require_POST
@operator_required
def prompt_run_approved(request, session_id, prompt_id):
    return _prompt_action(
        request,
        session_id,
        prompt_id,
        prompts.prompt_run_with_recorded_approval,
        "Running it now with the approval recorded on the endpoint.",
    )


@member_required
def prompt_fragment(request, session_id, prompt_id):
    """One prompt's card, re-rendered when its state or its endpoint's presence changes."""
    card = get_or_404(approval_selectors.session_prompt_card, session_id=session_id, prompt_id=prompt_id)
    return render(
        request,
        "console/_prompt.html",
        {
            "card": card,
            "session": card.prompt.session,
            "is_open": card.prompt.session.status == "open",
            "can_operate": request.membership.can_operate,
        },
    )


@require_POST
@operator_required
def follow_up_request(request, session_id):
    """Ask the user to approve a follow-up session later (when the endpoint is away or degraded)."""
    session = get_or_404(selectors.session_get, session_id=session_id)
    with refused(request, "Follow-up not requested"):
        data = FollowUpForm(request.POST).valid_data()
        sessions.follow_up_request(actor=request.user, session=session, at=data["at"], note=data["note"])
        messages.success(request, "Follow-up approval requested from the user.")
    return _back(session_id)
