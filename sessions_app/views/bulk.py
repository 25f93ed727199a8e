"""Bulk runs: one diagnostic across a client group or a selection, with one results view."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from caisey_agent.protocol import ACTION_KINDS
from endpoints import selectors as endpoint_selectors
from endpoints.models import Endpoint, EndpointStatus
from sessions_app.selectors import sessions as selectors
from sessions_app.services import actions as services
from sessions_app.views.sessions import _params_from


@require_POST
@operator_required
def bulk_start(request):
    kind = request.POST.get("kind", "")
    ids = request.POST.getlist("endpoint")
    group = request.POST.get("group", "")
    endpoints = Endpoint.objects.filter(status=EndpointStatus.ENROLLED)
    try:
        if ids:
            endpoints = list(endpoints.filter(pk__in=ids))
            if len(endpoints) != len(set(ids)):
                raise Http404("unknown endpoint")
        elif group:
            endpoints = list(
                endpoint_selectors.endpoint_list(client_group=group).filter(status=EndpointStatus.ENROLLED)
            )
        else:
            endpoints = []
    except ValidationError:
        raise Http404("unknown endpoint") from None
    try:
        run = services.bulk_run_start(
            actor=request.user,
            endpoints=endpoints,
            kind=kind,
            params=_params_from(request.POST, kind),
            reason=request.POST.get("reason", ""),
        )
    except services.SessionError as exc:
        messages.error(request, f"Bulk run not started: {exc}")
        return redirect("console:endpoint_list")
    return redirect("console:bulk_detail", run_id=run.pk)


@member_required
def bulk_detail(request, run_id):
    run = get_or_404(selectors.bulk_run_get, run_id=run_id)
    return render(
        request,
        "console/bulk_detail.html",
        {
            "run": run,
            "rows": selectors.bulk_run_rows(run=run),
            "progress": selectors.bulk_run_progress(run=run),
            "kind": ACTION_KINDS.get(run.kind),
        },
    )
