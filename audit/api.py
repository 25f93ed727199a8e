"""The REST API of the audit stream's sinks (/api/v1/audit-sinks/; issue 14 item 5): what a tenant
admin does on the console's Audit stream page, through ``audit.services`` with its rules (checked
destinations, a security event per change; no step-up, as in the console). Each sink carries its
lag and last error. Tenant admins only. Mounted by ``caisey.urls``."""

from __future__ import annotations

import dataclasses

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from audit import selectors, services
from audit.models import AuditSink, SinkKind
from endpoints.api_admin import ERRORS, LIST_ERRORS, READ_ERRORS, AdminViewSet
from endpoints.security_log import request_address

SINK_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="audit sink id")
MAX_ID = 2**63 - 1


class SinkOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=SinkKind.choices)
    destination = serializers.CharField(help_text="tcp://host:port, tls://host:port or the HTTPS URL")
    host = serializers.CharField()
    port = serializers.IntegerField(allow_null=True)
    url = serializers.CharField()
    tls = serializers.BooleanField()
    ca_pem = serializers.CharField(help_text="extra CA certificates trusted (PEM)")
    allow_private = serializers.BooleanField()
    enabled = serializers.BooleanField()
    cursor = serializers.IntegerField(help_text="the highest journal seq the collector accepted")
    sent_total = serializers.IntegerField()
    last_sent_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    last_error_at = serializers.DateTimeField(allow_null=True)
    lag_records = serializers.IntegerField(help_text="records of the tenant not yet accepted")
    lag_seconds = serializers.FloatField(help_text="age of the oldest of them (0 when none)")
    created_at = serializers.DateTimeField()


class SinkIn(serializers.Serializer):
    name = serializers.CharField(max_length=services.NAME_MAX)
    kind = serializers.ChoiceField(choices=SinkKind.choices)
    host = serializers.CharField(max_length=253, required=False, allow_blank=True, default="")
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True, default=None)
    url = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    tls = serializers.BooleanField(required=False, default=True)
    ca_pem = serializers.CharField(max_length=services.CA_PEM_MAX, required=False, allow_blank=True, default="")
    allow_private = serializers.BooleanField(required=False, default=False)


class SinkChangeIn(serializers.Serializer):
    name = serializers.CharField(max_length=services.NAME_MAX, required=False)
    kind = serializers.ChoiceField(choices=SinkKind.choices, required=False)
    host = serializers.CharField(max_length=253, required=False, allow_blank=True)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    url = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    tls = serializers.BooleanField(required=False)
    ca_pem = serializers.CharField(max_length=services.CA_PEM_MAX, required=False, allow_blank=True)
    allow_private = serializers.BooleanField(required=False)
    enabled = serializers.BooleanField(required=False, help_text="a resumed sink sends what it missed")


class TestOut(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


def _id(pk) -> int:
    """A sink id from the path: an integer in range, or no such sink."""
    try:
        value = int(str(pk))
    except ValueError:
        raise AuditSink.DoesNotExist from None
    if not 1 <= value <= MAX_ID:
        raise AuditSink.DoesNotExist
    return value


@extend_schema_view(
    list=extend_schema(
        summary="List the audit stream's sinks with their lag and last error (tenant admins)",
        responses={200: SinkOut(many=True), **LIST_ERRORS},
    ),
    create=extend_schema(
        summary="Add a sink (tenant admins); it starts with the oldest journal record kept",
        request=SinkIn,
        responses={201: SinkOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One sink, with its lag and last error (tenant admins)",
        parameters=[SINK_ID],
        responses={200: SinkOut, **READ_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a sink, or enable or disable it (tenant admins); its cursor stays",
        parameters=[SINK_ID],
        request=SinkChangeIn,
        responses={200: SinkOut, **ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a sink (tenant admins): nothing more goes to it",
        parameters=[SINK_ID],
        responses={204: None, **READ_ERRORS},
    ),
)
class AuditSinkViewSet(AdminViewSet):
    """Collectors the tenant's audit journal streams to (docs/integrations.md, Audit stream)."""

    model = AuditSink
    serializer_class = SinkOut
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _status(self, pk) -> selectors.SinkStatus:
        self.admin_only()
        return selectors.sink_status(tenant_id=self.request.tenant.pk, sink_id=_id(pk))

    def list(self, request):
        self.admin_only()
        page = self.paginate_queryset(selectors.sinks_status(tenant_id=request.tenant.pk))
        return self.get_paginated_response(SinkOut([dataclasses.asdict(s) for s in page], many=True).data)

    def retrieve(self, request, pk=None):
        return Response(SinkOut(dataclasses.asdict(self._status(pk))).data)

    def create(self, request):
        self.admin_only()
        body = SinkIn(data=request.data)
        body.is_valid(raise_exception=True)
        sink = services.audit_sink_create(
            actor=request.user,
            tenant_id=request.tenant.pk,
            data=services.SinkInput(**body.validated_data),
            address=request_address(request),
        )
        out = selectors.sink_status(tenant_id=request.tenant.pk, sink_id=sink.pk)
        return Response(SinkOut(dataclasses.asdict(out)).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        current = self._status(pk)
        body = SinkChangeIn(data=request.data)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        enabled = changes.pop("enabled", None)
        tenant_id, address = request.tenant.pk, request_address(request)
        if changes:
            sink = AuditSink.objects.get(pk=current.id)
            data = dataclasses.replace(services.sink_input_of(sink), **changes)
            services.audit_sink_update(
                actor=request.user, tenant_id=tenant_id, sink_id=current.id, data=data, address=address
            )
        if enabled is not None:
            services.audit_sink_set_enabled(
                actor=request.user, tenant_id=tenant_id, sink_id=current.id, enabled=enabled, address=address
            )
        out = selectors.sink_status(tenant_id=tenant_id, sink_id=current.id)
        return Response(SinkOut(dataclasses.asdict(out)).data)

    def destroy(self, request, pk=None):
        current = self._status(pk)
        services.audit_sink_delete(
            actor=request.user, tenant_id=request.tenant.pk, sink_id=current.id, address=request_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Send one test record straight to the sink and say whether it was accepted (tenant admins)",
        parameters=[SINK_ID],
        request=None,
        responses={200: TestOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        current = self._status(pk)
        outcome = services.audit_sink_test(actor=request.user, tenant_id=request.tenant.pk, sink_id=current.id)
        return Response(TestOut({"ok": outcome.ok, "message": outcome.message}).data)
