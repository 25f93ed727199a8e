"""The alternate approval channel: a plain page for the client's designated approver, no account.

Every visit is logged. Expired, used and wrong tokens all get the same plain page, so the
page never tells whether a link existed; guessing is rate-limited per address.
"""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.csrf import csrf_protect

from caisey import ratelimit, tenancy
from sessions_app.services import approvals as prompts

INVALID = "approval/invalid.html"


def _client(request) -> tuple[str, str]:
    return request.META.get("REMOTE_ADDR", "unknown"), request.META.get("HTTP_USER_AGENT", "")


@csrf_protect
def approval_link(request, token: str):
    ip, agent = _client(request)
    limit, window = settings.CAISEY["RATE_LINK_PER_IP"]
    if not ratelimit.hit("approval-link", ip, limit=limit, window=window):
        return render(request, INVALID, {"rate_limited": True}, status=429)
    with tenancy.system():
        link = prompts.approval_link_find(token=token)
        if link is None:
            return render(request, INVALID, status=404)
        if request.method == "POST":
            decision = request.POST.get("decision")
            if decision not in ("approve", "deny"):
                return render(request, INVALID, status=400)
            done = prompts.approval_link_decide(token=token, approve=decision == "approve", ip=ip, user_agent=agent)
            if not done:
                return render(request, INVALID, status=410)
            return render(request, "approval/done.html", {"approved": decision == "approve", "prompt": link.prompt})
        usable = prompts.approval_link_usable(link)
        prompts.approval_link_visit(link=link, ip=ip, user_agent=agent, outcome="viewed" if usable else "refused")
        if not usable:
            return render(request, INVALID, status=410)
        return render(request, "approval/decide.html", {"prompt": link.prompt, "endpoint": link.prompt.endpoint})
