"""Runbooks: list, write, edit (a new version each time), run on an endpoint or a client group."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from caisey_agent.protocol import ACTION_KINDS
from endpoints import access
from endpoints import selectors as endpoint_selectors
from sessions_app.forms.runbooks import RunbookForm, RunbookRunForm, steps_text
from sessions_app.selectors import bulk as bulk_selectors
from sessions_app.selectors import runbooks as selectors
from sessions_app.services import runbooks
from sessions_app.views.sessions import refused


@member_required
def runbook_list(request):
    return render(request, "console/runbook_list.html", {"runbooks": selectors.runbook_list()})


def _form_page(request, *, runbook=None, form_data=None):
    latest = selectors.runbook_version_get(runbook=runbook) if runbook is not None else None
    data = form_data or (
        {"name": latest.name, "description": latest.description, "steps": steps_text(latest.steps)} if latest else {}
    )
    return render(
        request,
        "console/runbook_form.html",
        {"runbook": runbook, "latest": latest, "data": data, "kinds": ACTION_KINDS.values()},
    )


@operator_required
def runbook_create(request):
    if request.method != "POST":
        return _form_page(request)
    version = None
    with refused(request, "Runbook not saved"):
        form = RunbookForm(request.POST)
        data = form.valid_data()
        version = runbooks.runbook_create(
            actor=request.user,
            tenant_id=request.membership.tenant_id,
            name=data["name"],
            description=data["description"],
            steps=form.parsed_steps(),
        )
    if version is None:
        return _form_page(request, form_data=request.POST)
    return redirect("console:runbook_detail", runbook_id=version.runbook_id)


@operator_required
def runbook_edit(request, runbook_id):
    runbook = get_or_404(selectors.runbook_get, runbook_id=runbook_id)
    if request.method != "POST":
        return _form_page(request, runbook=runbook)
    version = None
    with refused(request, "Runbook not saved"):
        form = RunbookForm(request.POST)
        data = form.valid_data()
        version = runbooks.runbook_edit(
            actor=request.user,
            runbook=runbook,
            name=data["name"],
            description=data["description"],
            steps=form.parsed_steps(),
        )
    if version is None:
        return _form_page(request, runbook=runbook, form_data=request.POST)
    return redirect("console:runbook_detail", runbook_id=runbook.pk)


@member_required
def runbook_detail(request, runbook_id):
    runbook = get_or_404(selectors.runbook_get, runbook_id=runbook_id)
    versions = selectors.runbook_versions(runbook=runbook)
    try:
        wanted = int(request.GET.get("version") or versions[0].number)
        shown = next(v for v in versions if v.number == wanted)
    except (ValueError, StopIteration, IndexError):
        raise Http404("no such version") from None
    return render(
        request,
        "console/runbook_detail.html",
        {
            "runbook": runbook,
            "versions": versions,
            "shown": shown,
            "steps": selectors.step_list(shown),
            "latest": versions[0],
            "runs": selectors.runbook_runs(runbook=runbook),
            "endpoints": endpoint_selectors.endpoint_list().filter(status="enrolled")[:500],
            "groups": endpoint_selectors.client_group_list(),
            "risky": runbooks.runbook_needs_step_up(shown),
        },
    )


@require_POST
@operator_required
def runbook_run(request, runbook_id):
    runbook = get_or_404(selectors.runbook_get, runbook_id=runbook_id)
    with refused(request, "Runbook not run"):
        form = RunbookRunForm(request.POST)
        data = form.valid_data()
        try:
            version = selectors.runbook_version_get(runbook=runbook, number=data["version"])
        except ObjectDoesNotExist:
            raise Http404("no such version") from None
        if data["group"]:
            endpoints = bulk_selectors.bulk_run_endpoints(client_group=data["group"])
            checked = access.step_up_require(request)  # a bulk run reaches many endpoints at once
            run = runbooks.runbook_run_bulk(
                actor=request.user, endpoints=endpoints, version=version, reason=data["reason"], step_up=checked
            )
            return redirect("console:bulk_detail", run_id=run.pk)
        endpoint = get_or_404(endpoint_selectors.endpoint_get, endpoint_id=data["endpoint"])
        step_up = access.step_up_require(request) if runbooks.runbook_needs_step_up(version) else None
        batch = runbooks.runbook_run_endpoint(
            actor=request.user, endpoint=endpoint, version=version, reason=data["reason"], step_up=step_up
        )
        return redirect("console:session_detail", session_id=batch.session_id)
    return redirect("console:runbook_detail", runbook_id=runbook.pk)
