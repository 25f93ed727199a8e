"""Console pages for incidents: group sessions on one outage, read them as one timeline or side by
side, write the summary, set the status, and share the incident's reviewed record.

Views validate their form (sessions_app/forms/incidents.py), then call one service; every POST
redirects back (PRG) with a refusal as a message, except creating a share link, whose token is
shown once on the page it answers with.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from caisey.console import get_or_404, member_required, operator_required
from endpoints import access
from endpoints.models import ClientGroup
from endpoints.selectors import tenant_ticket_template, ticket_link
from sessions_app.exports.json import record_json
from sessions_app.forms.incidents import (
    IncidentCreateForm,
    IncidentStatusForm,
    IncidentSummaryForm,
    IncidentTicketForm,
)
from sessions_app.forms.sharing import EXPIRY_CHOICES, ShareLinkForm
from sessions_app.models import Incident, IncidentStatus
from sessions_app.selectors import incidents as selectors
from sessions_app.selectors.sessions import session_get
from sessions_app.selectors.sharing import current_record, share_gate, share_links_for
from sessions_app.selectors.story import record_story
from sessions_app.services import incidents, sharing
from sessions_app.views.share import json_download, refused, render_link_created


def _back(incident: Incident):
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
            "incidents": selectors.incident_list(status=status)[:200],
            "status": status,
            "statuses": IncidentStatus.choices,
            "client_groups": ClientGroup.objects.order_by("name"),
            "can_operate": request.membership.can_operate,
        },
    )


@require_POST
@operator_required
def incident_create(request):
    with refused(request, "Incident not created"):
        data = IncidentCreateForm(request.POST).cleaned()
        incident = incidents.incident_create(
            actor=request.user,
            tenant_id=request.membership.tenant_id,
            title=data["title"],
            client_group=data["client_group"],
            ticket=data["ticket"],
        )
        return _back(incident)
    return redirect("console:incident_list")


@member_required
def incident_detail(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    filters = selectors.TimelineFilters(
        technician=request.GET.get("technician", ""),
        endpoint=request.GET.get("endpoint", ""),
        kind=request.GET.get("kind", ""),
    )
    view = "side" if request.GET.get("view") == "side" else "merged"
    timeline = selectors.incident_timeline(incident=incident, filters=filters)
    can_operate = request.membership.can_operate
    return render(
        request,
        "console/incident_detail.html",
        {
            "incident": incident,
            "ticket": ticket_link(tenant_ticket_template(tenant_id=incident.tenant_id), incident.ticket),
            "timeline": timeline,
            "filters": filters,
            "view": view,
            "sessions": timeline.sessions,
            "candidates": selectors.sessions_to_add(incident=incident) if can_operate else [],
            "links": share_links_for(incident=incident),
            "gate": share_gate(tenant_id=incident.tenant_id, sessions=timeline.sessions),
            "expiry_choices": EXPIRY_CHOICES,
            "next_statuses": selectors.incident_next_statuses(incident=incident),
            "is_closed": incident.status == IncidentStatus.CLOSED,
            "can_operate": can_operate,
        },
    )


@require_POST
@operator_required
def incident_add_session(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    session = get_or_404(session_get, session_id=request.POST.get("session", ""))
    with refused(request, "Not added"):
        incidents.incident_add_session(actor=request.user, incident=incident, session=session)
        messages.success(request, f"Added the session on {session.endpoint.hostname}.")
    return _back(incident)


@require_POST
@operator_required
def incident_remove_session(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    session = get_or_404(session_get, session_id=request.POST.get("session", ""))
    with refused(request, "Not removed"):
        incidents.incident_remove_session(actor=request.user, incident=incident, session=session)
    return _back(incident)


@require_POST
@operator_required
def incident_status(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    with refused(request, "Status not changed"):
        data = IncidentStatusForm(request.POST).cleaned()
        incidents.incident_set_status(actor=request.user, incident=incident, status=data["status"])
    return _back(incident)


@require_POST
@operator_required
def incident_summary(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    with refused(request, "Summary not saved"):
        data = IncidentSummaryForm(request.POST).cleaned()
        incidents.incident_write_summary(actor=request.user, incident=incident, summary=data["summary"])
        messages.success(request, "Summary saved.")
    return _back(incident)


@require_POST
@operator_required
def incident_ticket(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    with refused(request, "Ticket not saved"):
        data = IncidentTicketForm(request.POST).cleaned()
        incidents.incident_set_ticket(actor=request.user, incident=incident, ticket=data["ticket"])
        messages.success(request, "Ticket saved." if data["ticket"] else "Ticket removed.")
    return _back(incident)


@require_POST
@operator_required
def incident_share(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    with refused(request, "Not shared"):
        data = ShareLinkForm(request.POST).cleaned()
        link, token = sharing.share_link_create(
            actor=request.user,
            step_up=access.step_up_require(request),
            incident=incident,
            expires_in=data["expires_days"],
            label=data["label"],
        )
        return render_link_created(request, link=link, token=token, back=_back(incident).url, subject=incident.title)
    return _back(incident)


@member_required
def incident_preview(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    record = current_record(incident=incident)
    context = {"record": record, "story": record_story(record), "preview": True, "back": _back(incident).url}
    return render(request, "share/record.html", context)


@member_required
def incident_export(request, incident_id):
    incident = get_or_404(selectors.incident_get, incident_id=incident_id)
    return json_download(record_json(current_record(incident=incident)), f"incident-{incident.pk}.json")
