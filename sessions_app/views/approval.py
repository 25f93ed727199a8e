"""The alternate approval channel: a plain page for the client's designated approver, no account.

Built on the public token-link mechanism (sessions_app/views/public.py): rate limit, token
resolved by its hash, the link's tenant bound, private headers. Every visit is logged (viewed,
refused, approved, denied). An unknown, expired or used token gets the same plain page with the
same 404, so the page never tells what became of a link, nor whether a guessed one exists. The decision itself is
the approvals service's (sessions_app/services/approvals.py).
"""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_protect

from sessions_app.models import ApprovalLink
from sessions_app.services import approvals
from sessions_app.views import public

INVALID = "approval/invalid.html"
DECISIONS = {"approve": True, "deny": False}


def _log_visit(*, link: ApprovalLink, ip: str, user_agent: str, outcome: str) -> None:
    approvals.approval_link_visit(link=link, ip=ip, user_agent=user_agent, outcome=outcome)


APPROVAL_LINKS = public.TokenLinks(
    name="approval-link",
    model=ApprovalLink,
    token_prefix="apl_",
    rate="RATE_LINK_PER_IP",
    invalid_template=INVALID,
    log=_log_visit,
    related=("prompt", "prompt__endpoint", "prompt__session", "prompt__tenant"),
)


@csrf_protect
@public.token_page(APPROVAL_LINKS)
def approval_link(visit: public.Visit) -> HttpResponse:
    request, link = visit.request, visit.link
    if request.method == "POST":
        decision = request.POST.get("decision", "")
        if decision not in DECISIONS:
            return visit.refuse(400)
        # The service logs this visit with its outcome (approved, denied or refused).
        done = approvals.approval_link_decide(
            token=visit.token,
            approve=DECISIONS[decision],
            ip=visit.visitor.ip,
            user_agent=visit.visitor.user_agent,
        )
        if not done:
            return visit.refuse(404)
        return render(request, "approval/done.html", {"approved": DECISIONS[decision], "prompt": link.prompt})
    usable = approvals.approval_link_usable(link)
    visit.log("viewed" if usable else "refused")
    if not usable:
        return visit.refuse(404)
    return render(request, "approval/decide.html", {"prompt": link.prompt, "endpoint": link.prompt.endpoint})
