"""The REST API of webhook destinations (/api/v1/webhooks/; issue 14 item 5): what a tenant admin
does on the console's Webhooks page. Tenant admins only (technicians and viewers get 403), through
``integrations.services`` like the console, with its rules: the signing secret is in the answer of
a create or a secret rotation once and never again; every change is in the security log. The
console asks no step-up for these, so neither does the API (``endpoints/api_admin.py`` asks one
where the console does). Mounted by ``caisey.urls`` (sessions_app's router may not import this
app)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from caisey.api import parse_uuid
from endpoints.api_admin import ERRORS, LIST_ERRORS, READ_ERRORS, AdminViewSet
from integrations import selectors, services
from integrations.events import EVENT_TYPES
from integrations.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookFormat

WEBHOOK_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="webhook destination id")


class WebhookOut(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    description = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)))
    format = serializers.ChoiceField(choices=WebhookFormat.choices)
    enabled = serializers.BooleanField()
    allow_private = serializers.BooleanField(help_text="whether loopback and private addresses are allowed")
    failing_since = serializers.DateTimeField(allow_null=True, help_text="since when every attempt failed")
    disabled_reason = serializers.CharField(help_text="why it is disabled (an admin, or failing for a day)")
    rotating_until = serializers.DateTimeField(
        allow_null=True, help_text="until when the previous secret also signs (after a rotation)"
    )
    pending = serializers.IntegerField(help_text="deliveries waiting or being retried")
    given_up = serializers.IntegerField(help_text="deliveries given up (redeliver them)")
    created_at = serializers.DateTimeField()


class WebhookSecretOut(WebhookOut):
    secret = serializers.CharField(help_text="the signing secret (whsec_…): in this answer only")


class WebhookIn(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="https:// (or http://) URL of the receiver")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)), min_length=1, max_length=len(EVENT_TYPES)
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    format = serializers.ChoiceField(choices=WebhookFormat.choices, required=False, default=WebhookFormat.JSON)
    allow_private = serializers.BooleanField(required=False, default=False)


class WebhookChangeIn(serializers.Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)),
        min_length=1,
        max_length=len(EVENT_TYPES),
        required=False,
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    format = serializers.ChoiceField(choices=WebhookFormat.choices, required=False)
    allow_private = serializers.BooleanField(required=False)
    enabled = serializers.BooleanField(required=False, help_text="enabling again sends what waited at once")


class DeliveryOut(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.UUIDField(help_text="the event's id, the same on every attempt")
    event_type = serializers.CharField()
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    latency_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class RedeliverIn(serializers.Serializer):
    delivery = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="a delivery of this destination")


DELIVERY_FIELDS = tuple(DeliveryOut().fields)


def delivery_data(delivery: WebhookDelivery) -> dict:
    return {name: getattr(delivery, "pk" if name == "id" else name) for name in DELIVERY_FIELDS}


@extend_schema_view(
    list=extend_schema(
        summary="List webhook destinations (tenant admins)", responses={200: WebhookOut(many=True), **LIST_ERRORS}
    ),
    create=extend_schema(
        summary="Add a webhook destination (tenant admins); its signing secret is in this answer only",
        request=WebhookIn,
        responses={201: WebhookSecretOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One webhook destination (tenant admins)",
        parameters=[WEBHOOK_ID],
        responses={200: WebhookOut, **READ_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a webhook destination, or enable or disable it (tenant admins)",
        parameters=[WEBHOOK_ID],
        request=WebhookChangeIn,
        responses={200: WebhookOut, **ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a webhook destination and its delivery log (tenant admins)",
        parameters=[WEBHOOK_ID],
        responses={204: None, **READ_ERRORS},
    ),
)
class WebhookViewSet(AdminViewSet):
    """Where the tenant's events go (docs/integrations.md, Webhooks)."""

    model = WebhookEndpoint
    serializer_class = WebhookOut
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _endpoint(self, pk) -> WebhookEndpoint:
        self.admin_only()  # before the lookup: a technician learns nothing of which ids exist
        return WebhookEndpoint.objects.get(pk=parse_uuid(pk))

    def _out(self, endpoint: WebhookEndpoint, serializer=WebhookOut, **extra) -> dict:
        return serializer({**selectors.webhook_data(webhook_id=endpoint.pk), **extra}).data

    def list(self, request):
        self.admin_only()
        rows = selectors.webhook_list()
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(WebhookOut(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(self._out(self._endpoint(pk)))

    def create(self, request):
        self.admin_only()
        body = WebhookIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        issued = services.webhook_create(
            actor=request.user,
            tenant_id=request.tenant.pk,
            url=data["url"],
            events=data["events"],
            description=data["description"],
            fmt=data["format"],
            allow_private=data["allow_private"],
        )
        out = self._out(issued.endpoint, WebhookSecretOut, secret=issued.secret)
        return Response(out, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    def partial_update(self, request, pk=None):
        endpoint = self._endpoint(pk)
        body = WebhookChangeIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        settings_given = set(data) - {"enabled"}
        if settings_given:
            services.webhook_update(
                actor=request.user,
                endpoint=endpoint,
                url=data.get("url", endpoint.url),
                events=data.get("events", endpoint.events),
                description=data.get("description", endpoint.description),
                fmt=data.get("format", endpoint.format),
                allow_private=data.get("allow_private", endpoint.allow_private),
            )
        if "enabled" in data and data["enabled"] != endpoint.enabled:
            services.webhook_set_enabled(actor=request.user, endpoint=endpoint, enabled=data["enabled"])
        return Response(self._out(endpoint))

    def destroy(self, request, pk=None):
        services.webhook_delete(actor=request.user, endpoint=self._endpoint(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Rotate the signing secret (tenant admins): the new one is in this answer only; the old one "
        "also signs for 24 hours",
        parameters=[WEBHOOK_ID],
        request=None,
        responses={200: WebhookSecretOut, **ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        issued = services.webhook_rotate_secret(actor=request.user, endpoint=self._endpoint(pk))
        out = self._out(issued.endpoint, WebhookSecretOut, secret=issued.secret)
        return Response(out, headers={"Cache-Control": "no-store"})

    @extend_schema(
        summary="Send a webhook.test event to this destination (tenant admins), whatever its filter",
        parameters=[WEBHOOK_ID],
        request=None,
        responses={202: DeliveryOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        delivery = services.webhook_test_send(actor=request.user, endpoint=self._endpoint(pk))
        return Response(DeliveryOut(delivery_data(delivery)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="The destination's delivery log, newest first (tenant admins)",
        parameters=[
            WEBHOOK_ID,
            OpenApiParameter("status", str, enum=DeliveryStatus.values, description="only deliveries in this state"),
        ],
        responses={200: DeliveryOut(many=True), **READ_ERRORS},
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        endpoint = self._endpoint(pk)
        rows = selectors.delivery_rows(endpoint=endpoint, status=request.query_params.get("status", ""))
        page = self.paginate_queryset(rows) or []
        return self.get_paginated_response(DeliveryOut([delivery_data(d) for d in page], many=True).data)

    @extend_schema(
        summary="Send one of the destination's deliveries again, now, with the same event id (tenant admins)",
        parameters=[WEBHOOK_ID],
        request=RedeliverIn,
        responses={202: DeliveryOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        endpoint = self._endpoint(pk)
        body = RedeliverIn(data=request.data)
        body.is_valid(raise_exception=True)
        delivery = WebhookDelivery.objects.get(pk=body.validated_data["delivery"], endpoint=endpoint)
        services.delivery_redeliver(actor=request.user, delivery=delivery)
        delivery.refresh_from_db()
        return Response(DeliveryOut(delivery_data(delivery)).data, status=status.HTTP_202_ACCEPTED)
