"""The REST API of approval prompts and incidents (/api/v1/prompts/, /api/v1/incidents/).

The console's rules through the console's services: a prompt is cancelled, reissued, resent,
escalated or run with its recorded approval by sessions_app/services/approvals.py, an incident
created, grown, shrunk, moved and ticketed by sessions_app/services/incidents.py; none of these
asks for a step-up in the console, so none does here. Viewers read (``IsOperator``); another
tenant's ids are not found; a refused move is the service's 400 (``rejected``) or 409
(``conflict``) and changes nothing.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from caisey.api import parse_uuid
from endpoints.models import ClientGroup
from endpoints.selectors import tenant_ticket_template, ticket_link
from sessions_app.api import (
    ERRORS,
    LIST_ERRORS,
    READ_ERRORS,
    APIViewSet,
    ErrorOut,
    SessionListOut,
    TicketIn,
    TicketOut,
    _invalid,
    ticket_in,
)
from sessions_app.api_sharing import ShareLinkIn, ShareLinkOut, share_link_created
from sessions_app.models import Incident, IncidentStatus, Prompt, PromptState, SupportSession
from sessions_app.selectors import approvals as prompt_selectors
from sessions_app.selectors import incidents as incident_selectors
from sessions_app.selectors import sessions as session_selectors
from sessions_app.services import approvals as prompts
from sessions_app.services import incidents
from sessions_app.services.incidents import TITLE_MAX_LENGTH

PROMPT_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="prompt id")
INCIDENT_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="incident id")
CONFLICT = {409: OpenApiResponse(ErrorOut, description="a move the state does not allow, or a lost race")}

# --- prompts -------------------------------------------------------------------------------------------


class PromptEndpointOut(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()


class PromptOut(serializers.Serializer):
    id = serializers.UUIDField()
    session = serializers.UUIDField()
    endpoint = PromptEndpointOut()
    action = serializers.UUIDField(allow_null=True, help_text="the action it asks about (a batch's first)")
    batch = serializers.UUIDField(allow_null=True)
    follow_up_at = serializers.DateTimeField(allow_null=True, help_text="a follow-up session it asks about")
    title = serializers.CharField()
    detail = serializers.CharField()
    requested_by = serializers.CharField()
    state = serializers.ChoiceField(choices=PromptState.choices)
    state_changed_by = serializers.CharField(help_text="the party that reported the state")
    open = serializers.BooleanField(help_text="pending, delivered, acknowledged or failed to deliver")
    created_at = serializers.DateTimeField()
    deadline_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    seen_at = serializers.DateTimeField(allow_null=True)
    decided_at = serializers.DateTimeField(allow_null=True, help_text="the endpoint's clock")
    decided_by = serializers.CharField()
    reported_at = serializers.DateTimeField(allow_null=True)
    superseded_by = serializers.UUIDField(allow_null=True, help_text="the prompt that reissued it")
    allow_escalation = serializers.BooleanField()
    escalated_at = serializers.DateTimeField(allow_null=True)
    escalation_blocked = serializers.CharField(help_text="why it cannot be escalated now; empty when it can")
    late_decision = serializers.CharField()
    late_not_run = serializers.CharField()
    approval_used_by = serializers.CharField()


PROMPT_STATE_FILTERS = ["open", *PromptState.values]


class PromptListQuery(serializers.Serializer):
    session = serializers.UUIDField(required=False)
    state = serializers.ChoiceField(choices=PROMPT_STATE_FILTERS, required=False, default="")


def _prompt_move(summary: str, *, created: bool = False):
    return extend_schema(
        summary=summary,
        parameters=[PROMPT_ID],
        request=None,
        responses={201 if created else 200: PromptOut, **ERRORS, **CONFLICT},
    )


@extend_schema_view(
    list=extend_schema(
        summary="List approval prompts",
        parameters=[
            OpenApiParameter("session", OpenApiTypes.UUID, description="only this session's prompts"),
            OpenApiParameter("state", str, enum=PROMPT_STATE_FILTERS, description="open: any open state"),
        ],
        responses={200: PromptOut(many=True), 400: ERRORS[400], **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One approval prompt", parameters=[PROMPT_ID], responses={200: PromptOut, **READ_ERRORS}
    ),
)
class PromptViewSet(APIViewSet):
    """The end user's approval prompts: read them, and what a technician does with one that waits."""

    model = Prompt
    serializer_class = PromptOut

    def scoped_queryset(self):
        return prompt_selectors.prompt_list()

    def _prompt(self, pk) -> Prompt:
        return prompt_selectors.prompt_get(prompt_id=parse_uuid(pk))

    def _answer(self, prompt_id, code: int = status.HTTP_200_OK) -> Response:
        return Response(PromptOut(prompt_selectors.prompt_data(self._prompt(prompt_id))).data, status=code)

    def list(self, request):
        query = PromptListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = prompt_selectors.prompt_list(
            session_id=query.validated_data.get("session"), state=query.validated_data["state"]
        )
        return self.paginated(qs, PromptOut, prompt_selectors.prompt_data)

    def retrieve(self, request, pk=None):
        return self._answer(pk)

    @_prompt_move("Cancel an open prompt (the request it asks about does not run)")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        prompts.prompt_cancel(actor=request.user, prompt=self._prompt(pk))
        return self._answer(pk)

    @_prompt_move("Cancel and reissue: the prompt is superseded and asked again; answers the new prompt", created=True)
    @action(detail=True, methods=["post"])
    def reissue(self, request, pk=None):
        fresh = prompts.prompt_reissue(actor=request.user, prompt=self._prompt(pk))
        return self._answer(fresh.pk, status.HTTP_201_CREATED)

    @_prompt_move("Send a prompt that could not be delivered again")
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        prompts.prompt_resend(actor=request.user, prompt=self._prompt(pk))
        return self._answer(pk)

    @_prompt_move("Escalate: email a one-time approval link to the client's designated approver")
    @action(detail=True, methods=["post"])
    def escalate(self, request, pk=None):
        prompts.prompt_escalate(actor=request.user, prompt=self._prompt(pk), base_url=prompts.public_base_url(request))
        return self._answer(pk)

    @_prompt_move("Run the request with an approval the endpoint recorded in time but reported late")
    @action(detail=True, methods=["post"], url_path="run-approved")
    def run_approved(self, request, pk=None):
        prompts.prompt_run_with_recorded_approval(actor=request.user, prompt=self._prompt(pk))
        return self._answer(pk)


# --- incidents -----------------------------------------------------------------------------------------


class IncidentOut(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    client_group = serializers.UUIDField(allow_null=True, help_text="the client it is about, if one")
    ticket = TicketOut()
    status = serializers.ChoiceField(choices=IncidentStatus.choices)
    status_changed_by = serializers.CharField()
    next_statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=IncidentStatus.choices), help_text="the moves allowed now"
    )
    summary = serializers.CharField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)


class IncidentDetailOut(IncidentOut):
    sessions = SessionListOut(many=True, help_text="its sessions, oldest first")


class IncidentIn(serializers.Serializer):
    title = serializers.CharField(max_length=TITLE_MAX_LENGTH)
    client_group = serializers.UUIDField(required=False, allow_null=True, default=None)
    ticket = ticket_in(required=False, default="")


class IncidentSessionIn(serializers.Serializer):
    session = serializers.UUIDField(help_text="a session of your tenant")


class IncidentStatusIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=IncidentStatus.choices)


class IncidentListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=IncidentStatus.choices, required=False, default="")


def incident_data(incident: Incident, *, template: str, detail: bool = False) -> dict:
    data = {
        "id": incident.pk,
        "title": incident.title,
        "client_group": incident.client_group_id,
        "ticket": ticket_link(template, incident.ticket),
        "status": incident.status,
        "status_changed_by": incident.status_changed_by,
        "next_statuses": [s.value for s in incident_selectors.incident_next_statuses(incident=incident)],
        "summary": incident.summary,
        "created_by": incident.created_by.get_username(),
        "created_at": incident.created_at,
        "resolved_at": incident.resolved_at,
        "closed_at": incident.closed_at,
    }
    if detail:
        data["sessions"] = [
            session_selectors.session_data(s)
            for s in session_selectors.session_list()
            .filter(incident_memberships__incident=incident)
            .order_by("opened_at", "pk")
        ]
    return data


def _incident_move(summary: str, request_shape):
    return extend_schema(
        summary=summary,
        parameters=[INCIDENT_ID],
        request=request_shape,
        responses={200: IncidentDetailOut, **ERRORS, **CONFLICT},
    )


@extend_schema_view(
    list=extend_schema(
        summary="List incidents",
        parameters=[OpenApiParameter("status", str, enum=IncidentStatus.values)],
        responses={200: IncidentOut(many=True), 400: ERRORS[400], **LIST_ERRORS},
    ),
    create=extend_schema(
        summary="Create an incident", request=IncidentIn, responses={201: IncidentDetailOut, **ERRORS}
    ),
    retrieve=extend_schema(
        summary="One incident, with its sessions",
        parameters=[INCIDENT_ID],
        responses={200: IncidentDetailOut, **READ_ERRORS},
    ),
)
class IncidentViewSet(APIViewSet):
    """Incidents: several sessions on one outage, grouped, moved open → resolved → closed."""

    model = Incident
    serializer_class = IncidentOut

    def scoped_queryset(self):
        return incident_selectors.incident_list()

    def _incident(self, pk) -> Incident:
        return incident_selectors.incident_get(incident_id=parse_uuid(pk))

    def _detail(self, incident_id, code: int = status.HTTP_200_OK) -> Response:
        incident = incident_selectors.incident_get(incident_id=incident_id)
        data = incident_data(incident, template=tenant_ticket_template(tenant_id=incident.tenant_id), detail=True)
        return Response(IncidentDetailOut(data).data, status=code)

    def list(self, request):
        query = IncidentListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        template = tenant_ticket_template(tenant_id=request.membership.tenant_id)
        qs = incident_selectors.incident_list(status=query.validated_data["status"])
        return self.paginated(qs, IncidentOut, lambda i: incident_data(i, template=template))

    def retrieve(self, request, pk=None):
        return self._detail(self._incident(pk).pk)

    def create(self, request):
        body = IncidentIn(data=request.data)
        body.is_valid(raise_exception=True)
        group = None
        if body.validated_data["client_group"] is not None:
            group = ClientGroup.objects.filter(pk=body.validated_data["client_group"]).first()
            if group is None:
                return _invalid("client_group", "no such client group")
        incident = incidents.incident_create(
            actor=request.user,
            tenant_id=request.membership.tenant_id,
            title=body.validated_data["title"],
            client_group=group,
            ticket=body.validated_data["ticket"],
        )
        return self._detail(incident.pk, status.HTTP_201_CREATED)

    def _session_in(self, request) -> SupportSession | Response:
        body = IncidentSessionIn(data=request.data)
        body.is_valid(raise_exception=True)
        session = session_selectors.session_list().filter(pk=body.validated_data["session"]).first()
        return session if session is not None else _invalid("session", "no such session")

    @_incident_move("Add a session to the incident (its record says so)", IncidentSessionIn)
    @action(detail=True, methods=["post"])
    def sessions(self, request, pk=None):
        incident = self._incident(pk)
        session = self._session_in(request)
        if isinstance(session, Response):
            return session
        incidents.incident_add_session(actor=request.user, incident=incident, session=session)
        return self._detail(incident.pk)

    @_incident_move("Remove a session from the incident (its record says so)", IncidentSessionIn)
    @action(detail=True, methods=["post"], url_path="sessions/remove")
    def sessions_remove(self, request, pk=None):
        incident = self._incident(pk)
        session = self._session_in(request)
        if isinstance(session, Response):
            return session
        incidents.incident_remove_session(actor=request.user, incident=incident, session=session)
        return self._detail(incident.pk)

    @_incident_move(
        "Move the incident: open → resolved → closed (resolved may reopen; closed is final)", IncidentStatusIn
    )
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request, pk=None):
        incident = self._incident(pk)
        body = IncidentStatusIn(data=request.data)
        body.is_valid(raise_exception=True)
        incidents.incident_set_status(actor=request.user, incident=incident, status=body.validated_data["status"])
        return self._detail(incident.pk)

    @extend_schema(
        summary="Create a share link to the incident's record (every session reviewed, unless the tenant turned that off)",
        parameters=[INCIDENT_ID],
        request=ShareLinkIn,
        responses={201: ShareLinkOut, **ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="share-links")
    def share_links(self, request, pk=None):
        return share_link_created(request, incident=self._incident(pk))

    @_incident_move("Set, change or clear the incident's ticket reference", TicketIn)
    @action(detail=True, methods=["post"])
    def ticket(self, request, pk=None):
        incident = self._incident(pk)
        body = TicketIn(data=request.data)
        body.is_valid(raise_exception=True)
        incidents.incident_set_ticket(actor=request.user, incident=incident, ticket=body.validated_data["ticket"])
        return self._detail(incident.pk)
