"""The console's API tokens and security log pages, next to the members page: for the tenant's
admins only (the services check it again).

A new (or rotated) token's secret is shown once: the form's POST stashes it in the signed-in
session and redirects (POST-redirect-GET); the next GET of the tokens page pops it and shows it,
with ``Cache-Control: no-store``. Reloading that page shows it no more and issues nothing."""

from __future__ import annotations

import csv
from datetime import date

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required
from caisey.errors import Rejected
from endpoints import access
from endpoints.api_tokens import (
    MAX_DAYS,
    IssuedToken,
    api_token_issue,
    api_token_revoke,
    api_token_rotate,
    api_tokens_list,
)
from endpoints.members_views import _admin_only
from endpoints.models import Membership, SecurityEventKind, TokenScope
from endpoints.security_log import (
    EXPORT_COLUMNS,
    SecurityEventFilter,
    request_address,
    security_events_export,
    security_events_list,
)

User = get_user_model()


# The session key a just-issued token's secret waits under for the next GET (popped there).
ISSUED_KEY = "caisey_issued_token"


def _show_once(request, issued: IssuedToken) -> None:
    request.session[ISSUED_KEY] = {"id": issued.token.pk, "name": issued.token.name, "secret": issued.secret}


def _tokens_page(request, *, issued=None, status: int = 200):
    members = Membership.objects.select_related("user").filter(user__is_active=True).order_by("user__username")
    context = {
        "tokens": api_tokens_list(tenant_id=request.tenant.pk),
        "members": members,
        "scopes": TokenScope.choices,
        "max_days": MAX_DAYS,
        "issued": issued,
    }
    return render(request, "console/api_tokens.html", context, status=status)


@member_required
def token_list(request):
    _admin_only(request)
    issued = request.session.pop(ISSUED_KEY, None)  # shown on this answer only
    response = _tokens_page(request, issued=issued)
    if issued is not None:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@member_required
def token_issue(request):
    _admin_only(request)
    checked = access.step_up_require(request)  # a token is a credential: a recent check first
    try:
        owner_id = int(request.POST.get("owner", ""))
        days = int(request.POST.get("days", ""))
    except ValueError:
        raise Rejected("choose the token's owner and a number of days") from None
    owner = get_or_404(Membership.objects.select_related("user").get, user_id=owner_id).user
    issued = api_token_issue(
        actor=request.user,
        tenant_id=request.tenant.pk,
        owner=owner,
        name=request.POST.get("name", ""),
        scope=request.POST.get("scope", ""),
        days=days,
        step_up=checked,
        address=request_address(request),
    )
    _show_once(request, issued)
    return redirect("members:tokens")


@require_POST
@member_required
def token_rotate(request, api_token_id: int):
    """A new secret for the token (same owner, name, scope and lifetime); the old one stops now."""
    _admin_only(request)
    checked = access.step_up_require(request)
    issued = get_or_404(
        api_token_rotate,
        actor=request.user,
        tenant_id=request.tenant.pk,
        token_id=api_token_id,
        step_up=checked,
        address=request_address(request),
    )
    _show_once(request, issued)
    messages.success(request, "The token is rotated: its old secret no longer works.")
    return redirect("members:tokens")


@require_POST
@member_required
def token_revoke(request, api_token_id: int):
    _admin_only(request)
    checked = access.step_up_require(request)
    get_or_404(
        api_token_revoke,
        actor=request.user,
        tenant_id=request.tenant.pk,
        token_id=api_token_id,
        step_up=checked,
        address=request_address(request),
    )
    messages.success(request, "The token is revoked: it no longer works.")
    return redirect("members:tokens")


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise Rejected("dates are written YYYY-MM-DD") from None


def _filters(request) -> SecurityEventFilter:
    person = request.GET.get("person", "")
    return SecurityEventFilter(
        kind=request.GET.get("kind", "") if request.GET.get("kind", "") in SecurityEventKind.values else "",
        person_id=int(person) if person.isdigit() else None,
        since=_date(request.GET.get("since", "")),
        until=_date(request.GET.get("until", "")),
    )


@member_required
def security_log_csv(request):
    """The filtered log as CSV (built whole: a tenant's log is thousands of rows, not millions)."""
    _admin_only(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="security-log.csv"'
    writer = csv.writer(response)
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(security_events_export(tenant_id=request.tenant.pk, filters=_filters(request)))
    return response


@member_required
def security_log(request):
    _admin_only(request)
    filters = _filters(request)
    page = security_events_list(tenant_id=request.tenant.pk, filters=filters, page=request.GET.get("page") or 1)
    query = request.GET.copy()
    query.pop("page", None)
    members = Membership.objects.select_related("user").order_by("user__username")
    return render(
        request,
        "console/security_log.html",
        {
            "page": page,
            "filters": filters,
            "kinds": SecurityEventKind.choices,
            "members": members,
            "query": query.urlencode(),
        },
    )
