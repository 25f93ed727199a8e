"""The console's audit stream page, for the tenant's admins: the sinks with their lag and last
error, adding, editing and deleting one, enabling and disabling, sending a test record. Thin:
parse, call a service."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from audit.models import SinkKind
from audit.selectors import sinks_status
from audit.services import (
    SinkInput,
    audit_sink_create,
    audit_sink_delete,
    audit_sink_set_enabled,
    audit_sink_test,
    audit_sink_update,
)
from caisey.console import get_or_404, member_required
from caisey.errors import Rejected
from endpoints.models import Role
from endpoints.security_log import request_address


def _admin_only(request) -> None:
    if request.membership.role != Role.ADMIN:
        raise PermissionDenied("only the tenant's admins manage the audit stream")


@member_required
def sink_list(request):
    _admin_only(request)
    return render(
        request,
        "console/audit_sinks.html",
        {"sinks": sinks_status(tenant_id=request.tenant.pk), "kinds": SinkKind.choices},
    )


def _sink_input(request) -> SinkInput:
    """The add and edit forms' fields (the same form)."""
    port_text = request.POST.get("port", "").strip()
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        raise Rejected(f"the port {port_text[:20]!r} is not a number") from None
    return SinkInput(
        name=request.POST.get("name", ""),
        kind=request.POST.get("kind", ""),
        host=request.POST.get("host", ""),
        port=port,
        url=request.POST.get("url", ""),
        tls=request.POST.get("tls") == "on",
        ca_pem=request.POST.get("ca_pem", ""),
        allow_private=request.POST.get("allow_private") == "on",
    )


@require_POST
@member_required
def sink_create(request):
    _admin_only(request)
    sink = audit_sink_create(
        actor=request.user, tenant_id=request.tenant.pk, data=_sink_input(request), address=request_address(request)
    )
    messages.success(request, f"Sink “{sink.name}” added; it starts with the oldest record kept.")
    return redirect("audit:sinks")


@require_POST
@member_required
def sink_update(request, sink_id: int):
    _admin_only(request)
    sink = get_or_404(
        audit_sink_update,
        actor=request.user,
        tenant_id=request.tenant.pk,
        sink_id=sink_id,
        data=_sink_input(request),
        address=request_address(request),
    )
    messages.success(request, f"Sink “{sink.name}” saved; it goes on after the last record its collector accepted.")
    return redirect("audit:sinks")


@require_POST
@member_required
def sink_delete(request, sink_id: int):
    _admin_only(request)
    get_or_404(
        audit_sink_delete,
        actor=request.user,
        tenant_id=request.tenant.pk,
        sink_id=sink_id,
        address=request_address(request),
    )
    messages.success(request, "Sink deleted: nothing more goes to it.")
    return redirect("audit:sinks")


@require_POST
@member_required
def sink_set_enabled(request, sink_id: int, enabled: bool):
    _admin_only(request)
    sink = get_or_404(
        audit_sink_set_enabled,
        actor=request.user,
        tenant_id=request.tenant.pk,
        sink_id=sink_id,
        enabled=enabled,
        address=request_address(request),
    )
    messages.success(request, f"Sink “{sink.name}” {'enabled' if enabled else 'disabled'}.")
    return redirect("audit:sinks")


@require_POST
@member_required
def sink_test(request, sink_id: int):
    _admin_only(request)
    outcome = get_or_404(audit_sink_test, actor=request.user, tenant_id=request.tenant.pk, sink_id=sink_id)
    (messages.success if outcome.ok else messages.error)(request, outcome.message)
    return redirect("audit:sinks")
