"""Console pages for follow-ups: the list (mine or the tenant's) and opening one as a session."""

from __future__ import annotations

from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from sessions_app.selectors import followups as selectors
from sessions_app.services import followups


@member_required
def follow_up_list(request):
    who = request.GET.get("who", "mine")
    status = request.GET.get("status", "scheduled")
    rows = selectors.follow_up_list(assigned_to_id=request.user.pk if who != "all" else None, status=status)[:500]
    return render(
        request,
        "console/follow_up_list.html",
        {"follow_ups": rows, "who": "all" if who == "all" else "mine", "status": status},
    )


@require_POST
@operator_required
def follow_up_open(request, follow_up_id):
    """Open the follow-up as a new session on its endpoint, linked to the earlier one."""
    follow_up = get_or_404(selectors.follow_up_get, follow_up_id=follow_up_id)
    session = followups.follow_up_open(actor=request.user, follow_up=follow_up)
    return redirect("console:session_detail", session_id=session.pk)
