"""Bulk runs: one diagnostic across a client group or a selection, with one results view.

Which endpoints a run reaches is ``selectors.bulk.bulk_run_endpoints``'s rule, the API's too:
a revoked, unknown or foreign endpoint chosen explicitly refuses the run with a message.
"""

from __future__ import annotations

import csv

from django.http import HttpResponse, JsonResponse
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
    progress = selectors.bulk_run_progress(run=run)
    return render(
        request,
        "console/bulk_detail.html",
        {
            "run": run,
            "outcomes": selectors.bulk_run_outcomes(run=run),
            "progress": progress,
            "percent": round(100 * progress["done"] / progress["total"]) if progress["total"] else 100,
            "kind": ACTION_KINDS.get(run.kind),
            "reruns": list(run.reruns.order_by("created_at")),
        },
    )


@require_POST
@operator_required
def bulk_rerun(request, run_id):
    run = get_or_404(selectors.bulk_run_get, run_id=run_id)
    again = None
    with refused(request, "Not re-run"):
        checked = access.step_up_require(request)  # a bulk run reaches many endpoints at once
        again = bulk.bulk_run_rerun(
            actor=request.user, run=run, reason=request.POST.get("reason", "")[:500], step_up=checked
        )
    if again is None:
        return redirect("console:bulk_detail", run_id=run.pk)
    return redirect("console:bulk_detail", run_id=again.pk)


EXPORT_FIELDS = [
    "endpoint_id",
    "hostname",
    "client_group",
    "session_id",
    "action_id",
    "step",
    "kind",
    "status",
    "exit_code",
    "error",
    "outcome_group",
    "output_sha256_16",
    "started_at",
    "finished_at",
    "output",
]


@member_required
def bulk_export_csv(request, run_id):
    run = get_or_404(selectors.bulk_run_get, run_id=run_id)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="bulk-run-{run.pk}.csv"'
    writer = csv.DictWriter(response, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in selectors.bulk_run_export_rows(run=run):
        writer.writerow({k: csv_safe(v) for k, v in row.items()})
    return response


def csv_safe(value):
    """A cell a spreadsheet would run as a formula (=, +, -, @ first) is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@member_required
def bulk_export_json(request, run_id):
    run = get_or_404(selectors.bulk_run_get, run_id=run_id)
    outcomes = selectors.bulk_run_outcomes(run=run)
    data = {
        "run": selectors.bulk_run_data(run, rows=False),
        "summary": outcomes["summary"],
        "groups": [
            {k: g[k] for k in ("key", "status", "exit_codes", "digest", "count", "rerunnable")}
            | {"endpoints": [str(e["endpoint_id"]) for e in g["endpoints"]]}
            for g in outcomes["groups"]
        ],
        "rows": selectors.bulk_run_export_rows(run=run),
    }
    response = JsonResponse(data, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="bulk-run-{run.pk}.json"'
    return response
