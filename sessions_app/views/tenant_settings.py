"""The settings page: whether a record must be reviewed before it is shared, time zones, and the
link template that turns ticket references into links to the tenant's PSA.

Every member reads it and sets their own time zone (``endpoints.people.membership_time_zone_set``);
only a tenant admin changes the sharing rule, the tenant's default zone and the ticket link (the
services check the role: ``tenant_share_review_set``, ``tenant_time_zone_set``,
``tenant_ticket_link_set``). One route; the form's ``section`` or ``setting`` says which part was
posted (none: the sharing rule, as before)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render

from caisey.console import member_required
from endpoints.models import Role, Tenant
from endpoints.people import membership_time_zone_set, tenant_time_zone_set, time_zone_names, time_zone_of
from endpoints.services import tenant_share_review_set, tenant_ticket_link_set
from endpoints.tickets import TICKET_PRESETS
from sessions_app.views.share import refused


@member_required
def tenant_settings(request):
    membership = request.membership
    if request.method == "POST" and request.POST.get("section") == "time_zone":
        with refused(request, "Time zone not saved"):
            if "tenant_time_zone" in request.POST:
                tenant_time_zone_set(
                    actor=request.user, tenant_id=membership.tenant_id, time_zone=request.POST["tenant_time_zone"]
                )
            membership_time_zone_set(
                actor=request.user, tenant_id=membership.tenant_id, time_zone=request.POST.get("time_zone", "")
            )
            messages.success(request, "Time zone saved.")
        return redirect("console:tenant_settings")
    if request.method == "POST" and request.POST.get("setting") == "ticket_link":
        with refused(request, "Ticket link not saved"):
            template = request.POST.get("ticket_url_template", "")
            tenant_ticket_link_set(actor=request.user, tenant_id=membership.tenant_id, template=template)
            messages.success(request, "Ticket references are now links." if template.strip() else "Ticket links off.")
        return redirect("console:tenant_settings")
    if request.method == "POST":
        with refused(request, "Settings not saved"):
            required = request.POST.get("share_requires_review") == "on"
            tenant_share_review_set(actor=request.user, tenant_id=membership.tenant_id, required=required)
            messages.success(
                request,
                "A record must now be reviewed before it is shared."
                if required
                else "Records can now be shared without a review.",
            )
        return redirect("console:tenant_settings")
    return render(
        request,
        "console/tenant_settings.html",
        {
            "tenant": Tenant.objects.get(pk=membership.tenant_id),
            "is_admin": membership.role == Role.ADMIN,
            "my_time_zone": membership.time_zone,
            "time_zone_in_use": time_zone_of(membership),
            "server_time_zone": settings.TIME_ZONE,
            "time_zones": time_zone_names(),
            "ticket_presets": TICKET_PRESETS,
        },
    )
