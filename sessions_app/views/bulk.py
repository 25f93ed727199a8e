"""Bulk runs: one diagnostic across a client group or a selection, with one results view.

Which endpoints a run reaches is ``selectors.bulk.bulk_run_endpoints``'s rule, the API's too:
a revoked, unknown or foreign endpoint chosen explicitly refuses the run with a message.
"""

from __future__ import annotations

from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from caisey_agent.protocol import ACTION_KINDS
from endpoints import access
from sessions_app.forms.bulk import BulkRunForm
from sessions_app.selectors import bulk as selectors
from sessions_app.services import bulk
from sessions_app.views.sessions import refused


@require_POST
@operator_required
def bulk_start(request):
    run = None
    with refused(request, "Bulk run not started"):
        form = BulkRunForm(request.POST)
        data = form.valid_data()
        endpoints = selectors.bulk_run_endpoints(endpoint_ids=form.endpoint_ids(), client_group=data["group"])
        checked = access.step_up_require(request)  # a bulk run reaches many endpoints at once
        run = bulk.bulk_run_start(
            actor=request.user,
            endpoints=endpoints,
            kind=data["kind"],
            params=form.params(),
            reason=data["reason"],
            wake=form.wake_choice(),
            step_up=checked,
        )
    if run is None:
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
