"""The console's webhook pages (tenant admins only): destinations, their secrets shown once,
and each destination's delivery log with redelivery. Thin: parse, authorise, call a service."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required
from endpoints.models import Role
from integrations import selectors, services
from integrations.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

# The session key a just-issued secret waits under for the next GET (popped there: shown once).
ISSUED_KEY = "caisey_issued_webhook_secret"


def _admin_only(request) -> None:
    if request.membership.role != Role.ADMIN:
        raise PermissionDenied("only the tenant's admins manage webhooks")


def _destination(request, webhook_id) -> WebhookEndpoint:
    """The tenant's destination a page or form is about, for its admins only (404 if none)."""
    _admin_only(request)
    return get_or_404(WebhookEndpoint.objects.get, pk=webhook_id)


def _show_once(request, issued: services.IssuedSecret) -> None:
    request.session[ISSUED_KEY] = {"id": str(issued.endpoint.pk), "url": issued.endpoint.url, "secret": issued.secret}


def _fields(request) -> dict:
    return {
        "url": request.POST.get("url", ""),
        "description": request.POST.get("description", ""),
        "events": request.POST.getlist("events"),
        "fmt": request.POST.get("format", "json"),
        "allow_private": request.POST.get("allow_private") == "on",
    }


@member_required
def webhook_list(request):
    _admin_only(request)
    issued = request.session.pop(ISSUED_KEY, None)  # shown on this answer only
    response = render(
        request,
        "console/webhooks.html",
        {"webhooks": selectors.webhook_list(), "issued": issued, **selectors.webhook_form_choices()},
    )
    if issued is not None:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@member_required
def webhook_create(request):
    _admin_only(request)
    issued = services.webhook_create(actor=request.user, tenant_id=request.tenant.pk, **_fields(request))
    _show_once(request, issued)
    return redirect("integrations:webhooks")


@require_POST
@member_required
def webhook_update(request, webhook_id):
    endpoint = _destination(request, webhook_id)
    services.webhook_update(actor=request.user, endpoint=endpoint, **_fields(request))
    messages.success(request, "Destination saved.")
    return redirect("integrations:webhook_detail", webhook_id=endpoint.pk)


@require_POST
@member_required
def webhook_rotate(request, webhook_id):
    endpoint = _destination(request, webhook_id)
    _show_once(request, services.webhook_rotate_secret(actor=request.user, endpoint=endpoint))
    return redirect("integrations:webhooks")


@require_POST
@member_required
def webhook_set_enabled(request, webhook_id, enabled: bool):
    endpoint = _destination(request, webhook_id)
    services.webhook_set_enabled(actor=request.user, endpoint=endpoint, enabled=enabled)
    messages.success(request, "Destination enabled." if enabled else "Destination disabled.")
    return redirect("integrations:webhooks")


@require_POST
@member_required
def webhook_delete(request, webhook_id):
    endpoint = _destination(request, webhook_id)
    services.webhook_delete(actor=request.user, endpoint=endpoint)
    messages.success(request, "Destination deleted.")
    return redirect("integrations:webhooks")


@require_POST
@member_required
def webhook_test(request, webhook_id):
    endpoint = _destination(request, webhook_id)
    services.webhook_test_send(actor=request.user, endpoint=endpoint)
    messages.success(request, "Test event queued: see the delivery log.")
    return redirect("integrations:webhook_detail", webhook_id=endpoint.pk)


@member_required
def webhook_detail(request, webhook_id):
    endpoint = _destination(request, webhook_id)
    status = request.GET.get("status", "")
    page = selectors.delivery_log(endpoint=endpoint, page=request.GET.get("page", 1), status=status)
    return render(
        request,
        "console/webhook_detail.html",
        {
            "webhook": endpoint,
            "page": page,
            "status": status,
            "statuses": DeliveryStatus.choices,
            **selectors.webhook_form_choices(),
        },
    )


@require_POST
@member_required
def delivery_redeliver(request, webhook_id, delivery_id: int):
    _admin_only(request)
    delivery = get_or_404(WebhookDelivery.objects.get, pk=delivery_id, endpoint_id=webhook_id)
    services.delivery_redeliver(actor=request.user, delivery=delivery)
    messages.success(request, "Queued for redelivery.")
    return redirect("integrations:webhook_detail", webhook_id=webhook_id)
