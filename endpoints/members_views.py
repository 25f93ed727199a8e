"""The console's members page: a tenant's admins invite people by e-mail and deactivate or
reactivate them (the services in endpoints/people.py do the work and the checks)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from caisey import tenancy
from caisey.console import get_or_404, member_required
from caisey.errors import Rejected
from endpoints import access, people
from endpoints.models import Membership, Role, TenantSSO
from endpoints.security_log import request_address


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
        address=request_address(request),
    )
    messages.success(request, f"Invitation sent to {membership.user.email}.")
    return redirect("members:list")


@require_POST
@member_required
def member_set_active(request, membership_id: int, active: bool):
    _admin_only(request)
    membership = get_or_404(Membership.objects.select_related("user").get, pk=membership_id)
    if active:
        people.membership_reactivate(actor=request.user, membership=membership, address=request_address(request))
        messages.success(request, f"{membership.user.username} can sign in again.")
    else:
        people.membership_deactivate(actor=request.user, membership=membership, address=request_address(request))
        messages.success(request, f"{membership.user.username} is deactivated and signed out everywhere.")
    return redirect("members:list")


@require_POST
@member_required
def security_update(request):
    _admin_only(request)
    checked = access.step_up_require(request)  # loosening the tenant's rules is itself a risky change
    try:
        minutes = int(request.POST.get("step_up_minutes", ""))
    except ValueError:
        raise Rejected("the step-up window is a number of minutes") from None
    people.tenant_security_update(
        actor=request.user,
        tenant=request.tenant,
        mfa_required=request.POST.get("mfa_required") == "on",
        step_up_window_s=minutes * 60,
        step_up=checked,
        address=request_address(request),
    )
    messages.success(request, "Security settings saved.")
    return redirect("members:list")


@member_required
def sso_settings(request):
    """The tenant's OpenID Connect sign-in (tenant admins): the form, and saving it (after a
    step-up). The client secret is never shown back: left blank, the stored one is kept."""
    _admin_only(request)
    sso = TenantSSO.objects.select_related("app").filter(tenant=request.tenant).first()
    if request.method == "POST":
        checked = access.step_up_require(request)  # who may sign in, and as whom: a risky change
        people.tenant_sso_configure(
            actor=request.user,
            tenant=request.tenant,
            issuer=request.POST.get("issuer", ""),
            client_id=request.POST.get("client_id", ""),
            secret=request.POST.get("client_secret", ""),
            allowed_domains=request.POST.get("allowed_domains", ""),
            group_claim=request.POST.get("group_claim", "") or "groups",
            role_mapping=people.role_mapping_parse(request.POST.get("role_mapping", "")),
            default_role=request.POST.get("default_role", ""),
            accept_idp_mfa=request.POST.get("accept_idp_mfa") == "on",
            step_up=checked,
            address=request_address(request),
        )
        messages.success(request, "Single sign-on saved.")
        return redirect("members:sso")
    provider_id = sso.app.provider_id if sso else f"tenant-{request.tenant.slug}"
    context = {
        "sso": sso,
        "issuer": sso.app.settings.get("server_url", "") if sso else "",
        "client_id": sso.app.client_id if sso else "",
        "role_mapping": "\n".join(f"{g} = {r}" for g, r in sso.role_mapping.items()) if sso else "",
        "roles": Role.choices,
        "callback": request.build_absolute_uri(f"/accounts/oidc/{provider_id}/login/callback/"),
    }
    return render(request, "console/sso.html", context)


@require_POST
def sso_start(request):
    """The login page's "sign in with your organisation" form: on to the tenant's provider.
    A 307 keeps the POST (and its CSRF token) for allauth's login view, which starts the flow."""
    slug = request.POST.get("organisation", "").strip().lower()
    with tenancy.system():  # before sign-in no tenant is bound: find it by its name
        sso = TenantSSO.objects.select_related("app").filter(tenant__slug=slug).first()
    if sso is None:
        messages.error(request, "That organisation has no single sign-on here.")
        return redirect("login")
    url = reverse("openid_connect_login", kwargs={"provider_id": sso.app.provider_id})
    return HttpResponseRedirect(url, status=307)
