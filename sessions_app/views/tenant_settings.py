"""The tenant's settings page: whether a record must be reviewed before it is shared.

Every member reads it; only a tenant admin changes it (the service checks the role:
endpoints/services.py ``tenant_share_review_set``)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render

from caisey.console import member_required
from endpoints.models import Role, Tenant
from endpoints.services import tenant_share_review_set
from sessions_app.views.share import refused


@member_required
def tenant_settings(request):
    membership = request.membership
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
        {"tenant": Tenant.objects.get(pk=membership.tenant_id), "is_admin": membership.role == Role.ADMIN},
    )
