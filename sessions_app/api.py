"""The versioned REST API (/api/v1/): endpoints, the action catalogue, sessions, actions, bulk runs.

Token (or session) authenticated; every view derives from the shared tenant-scoped base
in ``caisey.api``, so everything read here goes through the scoped managers with the
caller's tenant bound. Reads use the selectors, which return plain data shaped as the
response serializers below (no model reaches a serializer); every write calls a service,
which writes the change, its transcript entry and any outbox message in one transaction.
Limits are the services' own (sessions_app/limits.py), shared with the console's forms.
Another tenant's ids are simply not found (404); a bad body is a 400 and changes nothing.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from caisey.api import Pagination, error_response, parse_uuid
from caisey_agent.protocol import ACTION_KINDS, CATEGORIES
from endpoints import access
from endpoints import selectors as endpoint_selectors
from endpoints.api_base import TenantScopedAPIMixin, TenantScopedAPIView
from endpoints.models import Endpoint, EndpointStatus, Presence
from endpoints.tickets import TICKET_MAX_LENGTH, TicketRejected, ticket_clean
from sessions_app.limits import DEFAULT_BULK_EXPIRY, MAX_BATCH, MAX_BULK_ENDPOINTS, MAX_EXPIRY, MIN_BULK_EXPIRY
from sessions_app.models import (
    Action,
    ActionStatus,
    BulkRun,
    FollowUp,
    FollowUpStatus,
    SessionStatus,
    SupportSession,
    WakeChoice,
)
from sessions_app.selectors import actions as action_selectors
from sessions_app.selectors import bulk as bulk_selectors
from sessions_app.selectors import followups as followup_selectors
from sessions_app.selectors import patterns as pattern_selectors
from sessions_app.selectors import sessions as selectors
from sessions_app.selectors.followups import FOLLOW_UP_STATUS_FILTERS
from sessions_app.services import actions, bulk, followups, sessions
from sessions_app.services.step_up import STEP_UP_KINDS

MAX_EXPIRY_S = int(MAX_EXPIRY.total_seconds())

# --- response shapes ---------------------------------------------------------------------------


class ErrorOut(serializers.Serializer):
    error = serializers.CharField(help_text="machine-readable code: invalid_request, rejected, not_found, ...")
    detail = serializers.CharField(help_text="what went wrong, for a person")
    field_errors = serializers.DictField(required=False, help_text="per-field messages of a rejected body")


ERRORS = {
    400: OpenApiResponse(ErrorOut, description="malformed request, or refused by the rules (`rejected`)"),
    401: OpenApiResponse(ErrorOut, description="no or bad token"),
    403: OpenApiResponse(ErrorOut, description="not a member, or a viewer trying to change something"),
    404: OpenApiResponse(ErrorOut, description="no such object in your tenant"),
}
READ_ERRORS = {code: ERRORS[code] for code in (401, 403, 404)}
LIST_ERRORS = {code: ERRORS[code] for code in (401, 403)}


class ClientGroupRef(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()


class HealthOut(serializers.Serializer):
    queue_depth = serializers.IntegerField(help_text="messages waiting for the agent's acknowledgement")
    failed_to_deliver = serializers.IntegerField(help_text="messages that could not be delivered, ever")
    failed_1h = serializers.IntegerField(help_text="messages that could not be delivered in the last hour")
    oldest_unacked_s = serializers.FloatField(
        allow_null=True, help_text="how long the oldest waits, counted from the current connection"
    )
    latency_p50_ms = serializers.FloatField(
        allow_null=True, help_text="delivery latency over the last hour: from the send that delivered it to its ack"
    )
    latency_p95_ms = serializers.FloatField(allow_null=True)
    delivered_1h = serializers.IntegerField()
    reconnects_1h = serializers.IntegerField()
    last_error = serializers.CharField()
    degraded_reasons = serializers.ListField(child=serializers.CharField())


class EndpointRef(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()
    client_group = ClientGroupRef()


class EndpointOut(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()
    client_group = ClientGroupRef()
    tags = serializers.ListField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=EndpointStatus.choices)
    presence = serializers.ChoiceField(
        choices=Presence.choices,
        help_text="connectivity now: active, lazy, degraded (connected but lagging), waking (asked to wake, "
        "the agent has not switched cadence yet) or offline",
    )
    presence_reason = serializers.CharField(help_text="why, as the console shows it")
    presence_since = serializers.DateTimeField(allow_null=True, help_text="since when (offline: last reachable)")
    last_seen_at = serializers.DateTimeField(allow_null=True)
    connected_at = serializers.DateTimeField(allow_null=True)
    disconnected_at = serializers.DateTimeField(allow_null=True)
    mode = serializers.CharField()
    heartbeat_interval = serializers.FloatField()
    agent_version = serializers.CharField()
    simulated = serializers.BooleanField(
        help_text="a simulated agent of the demo (`bin/demo`'s fleet): enrolled with a simulated token, no machine behind it"
    )
    machine_context = serializers.JSONField(help_text="the last machine context the agent reported")
    context_updated_at = serializers.DateTimeField(allow_null=True)
    enrolled_at = serializers.DateTimeField()
    health = HealthOut(help_text="bridge health figures")


class OpenSessionOut(serializers.Serializer):
    id = serializers.UUIDField()
    opened_by = serializers.CharField()
    opened_at = serializers.DateTimeField()
    reason = serializers.CharField()


class EndpointDetailOut(EndpointOut):
    open_sessions = OpenSessionOut(many=True)


class ParamOut(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["str", "int", "bool", "secret"])
    required = serializers.BooleanField()
    default = serializers.JSONField(allow_null=True)
    help = serializers.CharField()
    max_length = serializers.IntegerField()
    minimum = serializers.IntegerField(allow_null=True)
    maximum = serializers.IntegerField(allow_null=True)
    choices = serializers.ListField(child=serializers.CharField())


class ActionKindOut(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    category = serializers.ChoiceField(choices=list(CATEGORIES))
    description = serializers.CharField()
    default_timeout = serializers.FloatField()
    params = ParamOut(many=True)


class ActionOut(serializers.Serializer):
    id = serializers.UUIDField()
    session = serializers.UUIDField()
    endpoint = serializers.UUIDField()
    batch = serializers.UUIDField(allow_null=True)
    batch_position = serializers.IntegerField()
    bulk_run = serializers.UUIDField(allow_null=True)
    kind = serializers.CharField()
    category = serializers.CharField()
    params = serializers.JSONField()
    status = serializers.ChoiceField(choices=ActionStatus.choices)
    status_changed_by = serializers.CharField()
    requested_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True, help_text="queued for an away endpoint until then")
    timeout_s = serializers.FloatField()
    dispatched_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    deadline_at = serializers.DateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)
    exit_code = serializers.IntegerField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField()
    output_bytes = serializers.IntegerField()
    truncated = serializers.BooleanField()
    conditions_at_dispatch = serializers.JSONField(allow_null=True, help_text="bridge conditions when it was sent")
    conditions_at_completion = serializers.JSONField(allow_null=True, help_text="bridge conditions when it ended")
    wake = serializers.ChoiceField(
        choices=WakeChoice.choices,
        help_text="now: it woke the endpoint (active cadence) and was sent at once; "
        "wait: sent at the endpoint's next check-in, the endpoint left in its mode",
    )
    woken_at = serializers.DateTimeField(allow_null=True, help_text="when a technician woke the endpoint for it")


class PromptShareOut(serializers.Serializer):
    asked = serializers.IntegerField()
    missed = serializers.IntegerField(help_text="expired unanswered")
    miss_rate = serializers.FloatField(allow_null=True)


class PromptPatternOut(serializers.Serializer):
    asked = serializers.IntegerField(help_text="prompts answered (approved, denied) or missed (expired)")
    answered = serializers.IntegerField()
    missed = serializers.IntegerField()
    miss_rate = serializers.FloatField(allow_null=True)
    asked_by_hour = serializers.ListField(child=serializers.IntegerField(), help_text="24 counts, hour of day 0-23")
    missed_by_hour = serializers.ListField(child=serializers.IntegerField(), help_text="24 counts, hour of day 0-23")
    first_prompt = PromptShareOut(help_text="the first prompt of each session")
    later_prompts = PromptShareOut(help_text="every prompt after a session's first")
    median_decision_s = serializers.FloatField(allow_null=True, help_text="from asking to the user's decision")


class UserPromptPatternOut(PromptPatternOut):
    user = serializers.CharField(
        help_text="the account that decided (reported by the endpoint), else the users logged in when the session opened"
    )


class PromptPatternsOut(serializers.Serializer):
    days = serializers.IntegerField()
    time_zone = serializers.CharField(help_text="the time zone of the hours")
    endpoint = PromptPatternOut()
    users = UserPromptPatternOut(many=True, help_text="each user seen on this endpoint, over the client's endpoints")


class ApprovalOut(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.CharField(help_text="pending, delivered, acknowledged, approved, denied, expired, ...")
    state_changed_by = serializers.CharField(help_text="the party that reported the state")
    created_at = serializers.DateTimeField()
    deadline_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField()
    reported_at = serializers.DateTimeField(
        allow_null=True, help_text="when the decision reached the server (decided_at is the endpoint's clock)"
    )
    late_decision = serializers.CharField(help_text="a decision made after the deadline, refused as late")
    late_not_run = serializers.CharField(
        help_text="why a decision honoured late did not run its request again by itself"
    )
    approval_used_by = serializers.CharField(
        help_text="who ran the expired request again with an approval honoured late"
    )


class ActionDetailOut(ActionOut):
    output = serializers.CharField(help_text="streamed output, in order")
    approval = ApprovalOut(
        allow_null=True,
        help_text="the end user's approval prompt covering it, when its policy asks for one",
    )


class TicketOut(serializers.Serializer):
    ticket = serializers.CharField(help_text="the PSA ticket reference; empty when none")
    url = serializers.CharField(
        help_text="the ticket's link under the tenant's ticket link template; empty when either is unset"
    )


def ticket_in(**kwargs: Any) -> serializers.CharField:
    """A ticket reference in a request body: the services' rule (endpoints.tickets.ticket_clean)."""
    return serializers.CharField(
        max_length=TICKET_MAX_LENGTH,
        allow_blank=True,
        trim_whitespace=True,
        validators=[_ticket_valid],
        help_text="the PSA ticket reference (printable text, at most 64 characters; empty: none)",
        **kwargs,
    )


def _ticket_valid(value: str) -> None:
    try:
        ticket_clean(value)
    except TicketRejected as exc:
        raise serializers.ValidationError(str(exc)) from None


class SessionOut(serializers.Serializer):
    id = serializers.UUIDField()
    endpoint = EndpointRef()
    opened_by = serializers.CharField()
    reason = serializers.CharField()
    ticket = TicketOut()
    status = serializers.ChoiceField(choices=SessionStatus.choices)
    status_changed_by = serializers.CharField()
    opened_at = serializers.DateTimeField()
    opened_offline = serializers.BooleanField()
    closed_at = serializers.DateTimeField(allow_null=True)
    close_reason = serializers.CharField()
    last_activity_at = serializers.DateTimeField()
    follow_up_at = serializers.DateTimeField(allow_null=True)
    follow_up_note = serializers.CharField()


class SessionListOut(SessionOut):
    action_count = serializers.IntegerField()


class SessionDetailOut(SessionOut):
    actions = ActionOut(many=True)


class TranscriptEntryOut(serializers.Serializer):
    index = serializers.IntegerField()
    kind = serializers.CharField()
    actor = serializers.CharField()
    at = serializers.DateTimeField()
    action = serializers.UUIDField(allow_null=True)
    data = serializers.JSONField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class BatchOut(serializers.Serializer):
    id = serializers.UUIDField()
    session = serializers.UUIDField()
    actions = ActionOut(many=True)


class BulkProgressOut(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    waiting = serializers.IntegerField(help_text="queued or undeliverable (endpoint away)")


class BulkRowOut(serializers.Serializer):
    endpoint = EndpointRef()
    session = serializers.UUIDField()
    action = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ActionStatus.choices)
    exit_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    result = serializers.JSONField(allow_null=True)
    output = serializers.CharField()
    truncated = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)


class BulkRunOut(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    params = serializers.JSONField()
    reason = serializers.CharField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    progress = BulkProgressOut()


class BulkRunDetailOut(BulkRunOut):
    rows = BulkRowOut(many=True)


# --- request shapes -------------------------------------------------------------------------


def _clean_json(value: Any, depth: int = 0) -> None:
    """Parameters travel to the agent and into the transcript: plain, storable JSON only."""
    if depth > 8:
        raise serializers.ValidationError("params are nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise serializers.ValidationError("numbers must be finite")
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
            raise serializers.ValidationError("text must not contain NUL or unpaired surrogate characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_json(key, depth + 1)
            _clean_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _clean_json(item, depth + 1)


class ParamsField(serializers.DictField):
    """The action's parameters, checked against the catalogue by the service."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", dict)
        kwargs.setdefault("help_text", "parameters of the kind, as listed by /api/v1/catalogue/")
        super().__init__(child=serializers.JSONField(), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        _clean_json(value)
        return value


KIND_CHOICES = sorted(ACTION_KINDS)


class SessionOpenIn(serializers.Serializer):
    endpoint = serializers.UUIDField(help_text="the endpoint to troubleshoot")
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", help_text="why: a ticket number, the symptom"
    )
    wake = serializers.BooleanField(
        required=False, default=True, help_text="false: the endpoint keeps its lazy cadence (default: it is woken)"
    )
    ticket = ticket_in(required=False, default="")


class TicketIn(serializers.Serializer):
    ticket = ticket_in()


class SessionCloseIn(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class NoteIn(serializers.Serializer):
    text = serializers.CharField(max_length=10_000)


class NoteOut(serializers.Serializer):
    index = serializers.IntegerField()
    actor = serializers.CharField()
    at = serializers.DateTimeField()
    text = serializers.CharField()


class ActionIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    params = ParamsField()
    expires_in_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_S,
        help_text="how long it may wait for an away endpoint (default: the server's queue expiry)",
    )
    wake = serializers.ChoiceField(
        choices=WakeChoice.choices,
        required=False,
        default=WakeChoice.NOW,
        help_text="now (default): wake the endpoint and send at once; wait: send at its next check-in without waking it",
    )


class BatchItemIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    params = ParamsField()


class BatchIn(serializers.Serializer):
    actions = BatchItemIn(
        many=True,
        allow_empty=False,
        max_length=MAX_BATCH,
        help_text="run in order; the next is sent when the previous one ends",
    )


class BulkRunIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    params = ParamsField()
    client_group = serializers.CharField(
        required=False, max_length=200, help_text="every enrolled endpoint of this client group (slug)"
    )
    endpoints = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_empty=False,
        max_length=MAX_BULK_ENDPOINTS,
        help_text="or these endpoints",
    )
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    expires_in_seconds = serializers.IntegerField(
        required=False,
        min_value=int(MIN_BULK_EXPIRY.total_seconds()),
        max_value=MAX_EXPIRY_S,
        default=int(DEFAULT_BULK_EXPIRY.total_seconds()),
    )
    wake = serializers.ChoiceField(
        choices=WakeChoice.choices,
        required=False,
        default=WakeChoice.NOW,
        help_text="now (default): wake every endpoint; wait: each runs it at its next check-in, left resting",
    )

    def validate(self, attrs):
        if ("client_group" in attrs) == ("endpoints" in attrs):
            raise serializers.ValidationError("give either client_group or endpoints")
        return attrs


class FollowUpEndpointOut(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()


class FollowUpOut(serializers.Serializer):
    id = serializers.UUIDField()
    session = serializers.UUIDField(help_text="the session it follows up")
    endpoint = FollowUpEndpointOut()
    assigned_to = serializers.CharField(help_text="the technician it reminds")
    due_at = serializers.DateTimeField()
    due = serializers.BooleanField(help_text="scheduled and its time has come")
    note = serializers.CharField()
    approved_by_user = serializers.BooleanField(help_text="the end user approved it at the endpoint")
    status = serializers.ChoiceField(choices=FollowUpStatus.choices)
    reminded_at = serializers.DateTimeField(allow_null=True, help_text="when the due reminder went out (once)")
    opened_session = serializers.UUIDField(allow_null=True, help_text="the session it was opened as")
    opened_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class FollowUpListQuery(serializers.Serializer):
    assigned_to = serializers.ChoiceField(choices=["me", "all"], required=False, default="me")
    status = serializers.ChoiceField(choices=list(FOLLOW_UP_STATUS_FILTERS), required=False, default="scheduled")


class SessionListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=SessionStatus.choices, required=False)
    endpoint = serializers.UUIDField(required=False)


def _query_text(request, name: str) -> str:
    # NUL cannot be stored or compared by PostgreSQL; no real search contains one.
    return request.query_params.get(name, "").replace("\x00", "").strip()[:200]


def _invalid(field: str, message: str) -> Response:
    return error_response(
        status.HTTP_400_BAD_REQUEST, "invalid_request", f"{field}: {message}", field_errors={field: [message]}
    )


# --- views --------------------------------------------------------------------------------------

ENDPOINT_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="endpoint id")
SESSION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="session id")
ACTION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="action id")
FOLLOW_UP_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="follow-up id")
RUN_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="bulk run id")


class APIViewSet(TenantScopedAPIMixin, GenericViewSet):
    # JSON in, JSON out; ids in the path are UUIDs, anything else is simply not found.

    pagination_class = Pagination
    lookup_value_regex = "[^/]+"
    model: type = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # all_tenants: schema generation has no request and no tenant; the queryset is empty.
            return self.model.all_tenants.none()
        return self.scoped_queryset()

    def scoped_queryset(self):
        raise NotImplementedError

    def paginated(self, items, serializer_class, to_data):
        """One page of ``items``, each turned into plain data by ``to_data`` (a selector)."""
        page = [to_data(item) for item in self.paginate_queryset(items)]
        return self.get_paginated_response(serializer_class(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="List endpoints",
        parameters=[
            OpenApiParameter("q", str, description="search hostname, tags and client group name (all words)"),
            OpenApiParameter("client_group", str, description="only this client group (slug or name)"),
        ],
        responses={200: EndpointOut(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One endpoint", parameters=[ENDPOINT_ID], responses={200: EndpointDetailOut, **READ_ERRORS}
    ),
)
class EndpointViewSet(APIViewSet):
    """Enrolled endpoints with their connectivity, last known machine context and bridge health."""

    model = Endpoint
    serializer_class = EndpointOut

    def scoped_queryset(self):
        return endpoint_selectors.endpoint_list(
            query=_query_text(self.request, "q"), client_group=_query_text(self.request, "client_group")
        )

    def list(self, request):
        page = selectors.endpoint_overview(self.paginate_queryset(self.get_queryset()))
        return self.get_paginated_response(EndpointOut(page, many=True).data)

    def retrieve(self, request, pk=None):
        endpoint = endpoint_selectors.endpoint_get(endpoint_id=parse_uuid(pk))
        return Response(EndpointDetailOut(selectors.endpoint_detail_data(endpoint=endpoint)).data)

    @extend_schema(
        summary="How this endpoint's users answer approval prompts (last 30 days)",
        parameters=[ENDPOINT_ID],
        responses={200: PromptPatternsOut, **READ_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path="prompt-patterns")
    def prompt_patterns(self, request, pk=None):
        endpoint = endpoint_selectors.endpoint_get(endpoint_id=parse_uuid(pk))
        data = pattern_selectors.prompt_patterns(endpoint_id=endpoint.pk, client_group_id=endpoint.client_group_id)
        return Response(PromptPatternsOut(data).data)


class CatalogueView(TenantScopedAPIView):
    """What an action may be: each kind, its category (what approval policies decide on) and parameters."""

    @extend_schema(
        summary="The action catalogue: kinds and their parameters",
        responses={200: ActionKindOut(many=True), 401: ERRORS[401], 403: ERRORS[403]},
    )
    def get(self, request):
        return Response(ActionKindOut(list(ACTION_KINDS.values()), many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="List sessions",
        parameters=[
            OpenApiParameter("status", str, enum=[s.value for s in SessionStatus]),
            OpenApiParameter("endpoint", OpenApiTypes.UUID, description="only sessions on this endpoint"),
        ],
        responses={200: SessionListOut(many=True), 400: ERRORS[400], **LIST_ERRORS},
    ),
    create=extend_schema(
        summary="Open a session on an endpoint (wakes it unless wake is false)",
        request=SessionOpenIn,
        responses={201: SessionDetailOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One session, with its actions",
        parameters=[SESSION_ID],
        responses={200: SessionDetailOut, **READ_ERRORS},
    ),
)
class SessionViewSet(APIViewSet):
    """Support sessions: open one on an endpoint, run actions in it, add notes, read its record, close it."""

    model = SupportSession
    serializer_class = SessionListOut

    def scoped_queryset(self):
        return selectors.session_list()

    def _session(self, pk) -> SupportSession:
        return selectors.session_get(session_id=parse_uuid(pk))

    def list(self, request):
        query = SessionListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.session_list(
            status=query.validated_data.get("status", ""), endpoint_id=query.validated_data.get("endpoint")
        )
        return self.paginated(qs, SessionListOut, selectors.session_data)

    def create(self, request):
        body = SessionOpenIn(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = Endpoint.objects.filter(pk=body.validated_data["endpoint"]).first()
        if endpoint is None:
            return _invalid("endpoint", "no such endpoint")
        if endpoint.status != EndpointStatus.ENROLLED:
            return _invalid("endpoint", "the endpoint is revoked")
        session = sessions.session_open(
            actor=request.user,
            endpoint=endpoint,
            reason=body.validated_data["reason"],
            wake=body.validated_data["wake"],
            ticket=body.validated_data["ticket"],
        )
        detail = selectors.session_detail(session_id=session.pk)
        return Response(SessionDetailOut(detail).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk=None):
        return Response(SessionDetailOut(selectors.session_detail(session_id=parse_uuid(pk))).data)

    @extend_schema(
        summary="Close the session",
        parameters=[SESSION_ID],
        request=SessionCloseIn,
        responses={200: SessionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        session = self._session(pk)
        body = SessionCloseIn(data=request.data)
        body.is_valid(raise_exception=True)
        if session.status != SessionStatus.OPEN:
            return error_response(status.HTTP_400_BAD_REQUEST, "rejected", "this session is already closed")
        sessions.session_close(actor=request.user, session=session, reason=body.validated_data["reason"])
        return Response(SessionDetailOut(selectors.session_detail(session_id=session.pk)).data)

    @extend_schema(
        summary="Set, change or clear the session's ticket reference (recorded in the transcript)",
        parameters=[SESSION_ID],
        request=TicketIn,
        responses={200: SessionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def ticket(self, request, pk=None):
        session = self._session(pk)
        body = TicketIn(data=request.data)
        body.is_valid(raise_exception=True)
        sessions.session_set_ticket(actor=request.user, session=session, ticket=body.validated_data["ticket"])
        return Response(SessionDetailOut(selectors.session_detail(session_id=session.pk)).data)

    @extend_schema(
        summary="Add a note to the session record",
        parameters=[SESSION_ID],
        request=NoteIn,
        responses={201: NoteOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def notes(self, request, pk=None):
        session = self._session(pk)
        body = NoteIn(data=request.data)
        body.is_valid(raise_exception=True)
        sessions.session_add_note(actor=request.user, session=session, text=body.validated_data["text"])
        note = selectors.session_last_note(session=session)
        return Response(NoteOut(note).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="The session record: transcript entries in order, hash-chained",
        parameters=[SESSION_ID],
        responses={200: TranscriptEntryOut(many=True), **READ_ERRORS},
    )
    @action(detail=True, methods=["get"])
    def transcript(self, request, pk=None):
        session = self._session(pk)
        return self.paginated(
            selectors.session_transcript(session=session), TranscriptEntryOut, selectors.transcript_entry_data
        )

    @extend_schema(
        methods=["GET"],
        summary="The session's actions",
        parameters=[SESSION_ID],
        responses={200: ActionOut(many=True), **READ_ERRORS},
    )
    @extend_schema(
        methods=["POST"],
        summary="Run an action on the session's endpoint",
        parameters=[SESSION_ID],
        request=ActionIn,
        responses={201: ActionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["get", "post"])
    def actions(self, request, pk=None):
        session = self._session(pk)
        if request.method == "GET":
            qs = action_selectors.session_actions_list(session=session)
            return self.paginated(qs, ActionOut, action_selectors.action_data)
        body = ActionIn(data=request.data)
        body.is_valid(raise_exception=True)
        seconds = body.validated_data.get("expires_in_seconds")
        kind = body.validated_data["kind"]
        created = actions.action_request(
            actor=request.user,
            session=session,
            kind=kind,
            params=body.validated_data["params"],
            expires_in=timedelta(seconds=seconds) if seconds else None,
            wake=body.validated_data["wake"],
            step_up=access.api_step_up(request, risky=kind in STEP_UP_KINDS),
        )
        detail = action_selectors.action_detail(action_id=created.pk)
        return Response(ActionDetailOut(detail).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Run several actions in order",
        parameters=[SESSION_ID],
        request=BatchIn,
        responses={201: BatchOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def batches(self, request, pk=None):
        session = self._session(pk)
        body = BatchIn(data=request.data)
        body.is_valid(raise_exception=True)
        items = [(item["kind"], item["params"]) for item in body.validated_data["actions"]]
        batch = actions.batch_request(
            actor=request.user,
            session=session,
            items=items,
            step_up=access.api_step_up(request, risky=any(kind in STEP_UP_KINDS for kind, _ in items)),
        )
        return Response(BatchOut(action_selectors.batch_data(batch=batch)).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    retrieve=extend_schema(
        summary="One action: status, result, output and bridge conditions",
        parameters=[ACTION_ID],
        responses={200: ActionDetailOut, **READ_ERRORS},
    ),
)
class ActionViewSet(APIViewSet):
    """One action of a session: its status, result and output, and the bridge conditions it ran under."""

    model = Action
    serializer_class = ActionDetailOut

    def scoped_queryset(self):
        return Action.objects.all()

    def _action(self, pk) -> Action:
        return action_selectors.action_get(action_id=parse_uuid(pk))

    def _detail(self, pk) -> Response:
        return Response(ActionDetailOut(action_selectors.action_detail(action_id=parse_uuid(pk))).data)

    def retrieve(self, request, pk=None):
        return self._detail(pk)

    @extend_schema(
        summary="Cancel the action (a running process is told to stop)",
        parameters=[ACTION_ID],
        request=None,
        responses={200: ActionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        actions.action_cancel(actor=request.user, action=self._action(pk))
        return self._detail(pk)

    @extend_schema(
        summary="Resend an action that could not be delivered",
        parameters=[ACTION_ID],
        request=None,
        responses={200: ActionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        actions.action_resend(actor=request.user, action=self._action(pk))
        return self._detail(pk)

    @extend_schema(
        summary="Wake the endpoint now for an action that waits for its next check-in",
        parameters=[ACTION_ID],
        request=None,
        responses={200: ActionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def wake(self, request, pk=None):
        actions.action_wake(actor=request.user, action=self._action(pk))
        return self._detail(pk)


@extend_schema_view(
    list=extend_schema(summary="List bulk runs", responses={200: BulkRunOut(many=True), **LIST_ERRORS}),
    create=extend_schema(
        summary="Run one diagnostic across many endpoints",
        request=BulkRunIn,
        responses={201: BulkRunDetailOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One bulk run: a row per endpoint, and progress",
        parameters=[RUN_ID],
        responses={200: BulkRunDetailOut, **READ_ERRORS},
    ),
)
class BulkRunViewSet(APIViewSet):
    """One diagnostic across many endpoints: a session per endpoint, one combined view of the results."""

    model = BulkRun
    serializer_class = BulkRunOut

    def scoped_queryset(self):
        return bulk_selectors.bulk_run_list()

    def list(self, request):
        page = [bulk_selectors.bulk_run_data(run, rows=False) for run in self.paginate_queryset(self.get_queryset())]
        return self.get_paginated_response(BulkRunOut(page, many=True).data)

    def retrieve(self, request, pk=None):
        run = bulk_selectors.bulk_run_get(run_id=parse_uuid(pk))
        return Response(BulkRunDetailOut(bulk_selectors.bulk_run_data(run, rows=True)).data)

    def create(self, request):
        body = BulkRunIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            endpoints = bulk_selectors.bulk_run_endpoints(
                endpoint_ids=data.get("endpoints", ()), client_group=data.get("client_group", "")
            )
        except bulk_selectors.BulkChoiceRejected as exc:
            return _invalid(exc.field, str(exc))
        run = bulk.bulk_run_start(
            actor=request.user,
            endpoints=endpoints,
            kind=data["kind"],
            params=data["params"],
            reason=data["reason"],
            expires_in=timedelta(seconds=data["expires_in_seconds"]),
            wake=data["wake"],
            step_up=access.api_step_up(request, risky=True),  # a bulk run reaches many endpoints at once
        )
        run = bulk_selectors.bulk_run_get(run_id=run.pk)
        detail = bulk_selectors.bulk_run_data(run, rows=True)
        return Response(BulkRunDetailOut(detail).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(
        summary="List follow-ups (yours by default, or the tenant's)",
        parameters=[
            OpenApiParameter("assigned_to", str, enum=["me", "all"], description="yours (default) or everyone's"),
            OpenApiParameter("status", str, enum=list(FOLLOW_UP_STATUS_FILTERS), description="default: scheduled"),
        ],
        responses={200: FollowUpOut(many=True), 400: ERRORS[400], **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary="One follow-up", parameters=[FOLLOW_UP_ID], responses={200: FollowUpOut, **READ_ERRORS}
    ),
)
class FollowUpViewSet(APIViewSet):
    """Follow-up sessions scheduled by technicians or approved by end users: list, and open one."""

    model = FollowUp
    serializer_class = FollowUpOut

    def scoped_queryset(self):
        return followup_selectors.follow_up_list(status="all")

    def list(self, request):
        query = FollowUpListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        mine = query.validated_data["assigned_to"] == "me"
        qs = followup_selectors.follow_up_list(
            assigned_to_id=request.user.pk if mine else None, status=query.validated_data["status"]
        )
        return self.paginated(qs, FollowUpOut, followup_selectors.follow_up_data)

    def retrieve(self, request, pk=None):
        follow_up = followup_selectors.follow_up_get(follow_up_id=parse_uuid(pk))
        return Response(FollowUpOut(followup_selectors.follow_up_data(follow_up)).data)

    @extend_schema(
        summary="Open the follow-up: a new session on its endpoint, linked to the earlier one",
        parameters=[FOLLOW_UP_ID],
        request=None,
        responses={201: SessionDetailOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def open(self, request, pk=None):
        follow_up = followup_selectors.follow_up_get(follow_up_id=parse_uuid(pk))
        session = followups.follow_up_open(actor=request.user, follow_up=follow_up)
        return Response(
            SessionDetailOut(selectors.session_detail(session_id=session.pk)).data, status=status.HTTP_201_CREATED
        )
