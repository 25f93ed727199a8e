"""Console actions on approval prompts: cancel, cancel-and-reissue, resend, escalate, follow-up."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from caisey.console import operator_required
from sessions_app import prompts, selectors, services


def _prompt(session_id, prompt_id):
    try:
        return selectors.prompt_get(prompt_id=prompt_id, session_id=session_id)
    except (ObjectDoesNotExist, ValidationError):
        raise Http404("not found") from None


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
    return _prompt_action(request, session_id, prompt_id, prompts.prompt_reissue,
                          "Prompt reissued; the old one is superseded and can no longer be approved.")


@require_POST
@operator_required
def prompt_resend(request, session_id, prompt_id):
    return _prompt_action(request, session_id, prompt_id, prompts.prompt_resend, "Prompt queued again.")


@require_POST
@operator_required
def prompt_escalate(request, session_id, prompt_id):
    return _prompt_action(request, session_id, prompt_id, prompts.prompt_escalate,
                          "Approval link sent to the client's designated approver.",
                          base_url=prompts.public_base_url(request))


@require_POST
@operator_required
def follow_up_request(request, session_id):
    """Ask the user to approve a follow-up session later (when the endpoint is away or degraded)."""
    try:
        session = selectors.session_get(session_id=session_id)
    except (ObjectDoesNotExist, ValidationError):
        raise Http404("not found") from None
    at = parse_datetime(request.POST.get("at", ""))
    if at is None:
        messages.error(request, "Give a date and time for the follow-up.")
        return _back(session_id)
    if timezone.is_naive(at):
        at = timezone.make_aware(at)
    try:
        services.follow_up_request(actor=request.user, session=session, at=at, note=request.POST.get("note", ""))
        messages.success(request, "Follow-up approval requested from the user.")
    except services.SessionError as exc:
        messages.error(request, str(exc))
    return _back(session_id)
