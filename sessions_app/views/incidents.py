"""Console pages for incidents: group sessions on one outage, read them as one timeline or side by
side, write the summary, set the status, and share the incident's reviewed record.

Views parse and authorise, then call a service; every POST redirects back (PRG) with errors as
messages, except creating a share link, whose token is shown once on the page it answers with.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from endpoints.models import ClientGroup
from sessions_app.models import IncidentStatus
from sessions_app.selectors import sessions as selectors
from sessions_app.services import incidents, sharing
from sessions_app.services.review import ReviewError
from sessions_app.views.share import EXPIRY_CHOICES, expiry_from, render_link_created


def _back(incident):
    return redirect("console:incident_detail", incident_id=incident.pk)


@member_required
def incident_list(request):
    status = request.GET.get("status", "")
    if status not in IncidentStatus.values and status != "":
        raise Http404("unknown status filter")
    return render(
        request,
        "console/incident_list.html",
        {
            "incidents": incidents.incident_list(status=status)[:200],
            "status": status,
            "statuses": IncidentStatus.choices,
            "client_groups": ClientGroup.objects.order_by("name"),
            "can_operate": request.membership.can_operate,
        },
    )


@require_POST
@operator_required
def incident_create(request):
    group_id = request.POST.get("client_group", "").strip()
    group = get_or_404(ClientGroup.objects.get, pk=group_id) if group_id else None
    try:
        incident = incidents.incident_create(
            actor=request.user,
            tenant_id=request.membership.tenant_id,
            title=request.POST.get("title", ""),
            client_group=group,
        )
    except incidents.IncidentError as exc:
        messages.error(request, f"Incident not created: {exc}")
        return redirect("console:incident_list")
    return _back(incident)


@member_required
def incident_detail(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    filters = incidents.TimelineFilters(
        technician=request.GET.get("technician", ""),
        endpoint=request.GET.get("endpoint", ""),
        kind=request.GET.get("kind", ""),
    )
    view = "side" if request.GET.get("view") == "side" else "merged"
    timeline = incidents.incident_timeline(incident=incident, filters=filters)
    can_operate = request.membership.can_operate
    return render(
        request,
        "console/incident_detail.html",
        {
            "incident": incident,
            "timeline": timeline,
            "filters": filters,
            "view": view,
            "sessions": timeline.sessions,
            "candidates": incidents.sessions_to_add(incident=incident) if can_operate else [],
            "links": sharing.share_links_for(incident=incident),
            "expiry_choices": EXPIRY_CHOICES,
            "next_statuses": [s for s in IncidentStatus if s in incidents.INCIDENT_TRANSITIONS[incident.status]],
            "is_closed": incident.status == IncidentStatus.CLOSED,
            "can_operate": can_operate,
        },
    )


@require_POST
@operator_required
def incident_add_session(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    session = get_or_404(selectors.session_get, session_id=request.POST.get("session", ""))
    try:
        incidents.incident_add_session(actor=request.user, incident=incident, session=session)
        messages.success(request, f"Added the session on {session.endpoint.hostname}.")
    except incidents.IncidentError as exc:
        messages.error(request, f"Not added: {exc}")
    return _back(incident)


@require_POST
@operator_required
def incident_remove_session(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    session = get_or_404(selectors.session_get, session_id=request.POST.get("session", ""))
    try:
        incidents.incident_remove_session(actor=request.user, incident=incident, session=session)
    except incidents.IncidentError as exc:
        messages.error(request, f"Not removed: {exc}")
    return _back(incident)


@require_POST
@operator_required
def incident_status(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    try:
        incidents.incident_set_status(actor=request.user, incident=incident, status=request.POST.get("status", ""))
    except incidents.IncidentError as exc:
        messages.error(request, f"Status not changed: {exc}")
    return _back(incident)


@require_POST
@operator_required
def incident_summary(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    try:
        incidents.incident_write_summary(actor=request.user, incident=incident, summary=request.POST.get("summary", ""))
        messages.success(request, "Summary saved.")
    except incidents.IncidentError as exc:
        messages.error(request, f"Summary not saved: {exc}")
    return _back(incident)


@require_POST
@operator_required
def incident_share(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    try:
        link, token = sharing.share_link_create(
            actor=request.user,
            incident=incident,
            expires_in=expiry_from(request.POST),
            label=request.POST.get("label", ""),
        )
    except ReviewError as exc:
        messages.error(request, f"Not shared: {exc}")
        return _back(incident)
    return render_link_created(request, link=link, token=token, back=_back(incident).url, subject=incident.title)


@member_required
def incident_preview(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    record = sharing.current_record(incident=incident)
    return render(request, "share/record.html", {"record": record, "preview": True, "back": _back(incident).url})


@member_required
def incident_export(request, incident_id):
    incident = get_or_404(incidents.incident_get, incident_id=incident_id)
    data = sharing.export_record(sharing.current_record(incident=incident))
    response = JsonResponse(data, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}.json"'
    return response
