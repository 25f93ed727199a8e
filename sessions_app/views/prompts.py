"""Console actions on approval prompts: cancel, cancel-and-reissue, resend, escalate, follow-up."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, operator_required, posted_datetime
from sessions_app.selectors import sessions as selectors
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts


def _prompt(session_id, prompt_id):
    return get_or_404(selectors.prompt_get, prompt_id=prompt_id, session_id=session_id)


def _back(session_id):
    return redirect("console:session_detail", session_id=session_id)


def _prompt_action(request, session_id, prompt_id, func, done: str, **kwargs):
    prompt = _prompt(session_id, prompt_id)
    try:
        func(actor=request.user, prompt=prompt, **kwargs)
        messages.success(request, done)
    except prompts.PromptError as exc:
        messages.error(request, str(exc))
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
def follow_up_request(request, session_id):
    """Ask the user to approve a follow-up session later (when the endpoint is away or degraded)."""
    session = get_or_404(selectors.session_get, session_id=session_id)
    at = posted_datetime(request)
    if at is None:
        messages.error(request, "Give a date and time for the follow-up.")
        return _back(session_id)
    try:
        services.follow_up_request(actor=request.user, session=session, at=at, note=request.POST.get("note", ""))
        messages.success(request, "Follow-up approval requested from the user.")
    except services.SessionError as exc:
        messages.error(request, str(exc))
    return _back(session_id)
