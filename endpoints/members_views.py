"""The console's members page: a tenant's admins invite people by e-mail and deactivate or
reactivate them (the services in endpoints/people.py do the work and the checks)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required
from endpoints import people
from endpoints.models import Membership, Role


def _admin_only(request) -> None:
    if request.membership.role != Role.ADMIN:
        raise PermissionDenied("only the tenant's admins manage its members")


@member_required
def member_list(request):
    _admin_only(request)
    members = Membership.objects.select_related("user").order_by("user__username")
    return render(request, "console/members.html", {"members": members, "roles": Role.choices})


@require_POST
@member_required
def member_invite(request):
    _admin_only(request)
    membership = people.membership_invite(
        actor=request.user,
        tenant=request.tenant,
        email=request.POST.get("email", ""),
        role=request.POST.get("role", Role.TECHNICIAN),
        site_url=request.build_absolute_uri("/"),
    )
    messages.success(request, f"Invitation sent to {membership.user.email}.")
    return redirect("members:list")


@require_POST
@member_required
def member_set_active(request, membership_id: int, active: bool):
    _admin_only(request)
    membership = get_or_404(Membership.objects.select_related("user").get, pk=membership_id)
    if active:
        people.membership_reactivate(actor=request.user, membership=membership)
        messages.success(request, f"{membership.user.username} can sign in again.")
    else:
        people.membership_deactivate(actor=request.user, membership=membership)
        messages.success(request, f"{membership.user.username} is deactivated and signed out everywhere.")
    return redirect("members:list")
