"""The REST API of a tenant admin's setup: client groups, their approval policies, enrollment
tokens (/api/v1/client-groups/, /api/v1/enrollment-tokens/).

In the console these live in the Django admin, which only tenant admins reach; so here every write
is a tenant admin's (technicians and viewers get 403), through endpoints/services.py. Changing an
approval policy asks for the console's step-up (``access.api_step_up``: a browser session needs a
recent check, an API token was issued under one) and is written to the security log. A new
enrollment token's secret is in the response once; only its hash is stored.
"""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from caisey.api import Pagination, error_response, parse_uuid
from endpoints import access, agent_install, services
from endpoints.api_base import TenantScopedAPIMixin
from endpoints.models import ApprovalPolicy, ApprovalRequirement, ClientGroup, EnrollmentToken
from endpoints.security_log import request_address
from endpoints.selectors import DEFAULT_POLICY

GROUP_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="client group id")
TOKEN_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="enrollment token id")
MAX_TOKEN_DAYS = 90
MAX_TOKEN_USES = 10_000
MAX_DEADLINE_S = 24 * 3600


class _Error(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()
    field_errors = serializers.DictField(required=False)


ERRORS = {
    400: OpenApiResponse(_Error, description="malformed request, or refused by the rules (`rejected`)"),
    401: OpenApiResponse(_Error, description="no or bad token"),
    403: OpenApiResponse(_Error, description="not a tenant admin"),
    404: OpenApiResponse(_Error, description="no such object in your tenant"),
}
READ_ERRORS = {code: ERRORS[code] for code in (401, 403, 404)}
LIST_ERRORS = {code: ERRORS[code] for code in (401, 403)}


class AdminViewSet(TenantScopedAPIMixin, GenericViewSet):
    pagination_class: type[LimitOffsetPagination] = Pagination
    lookup_value_regex = "[^/]+"
    model: type = ClientGroup

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # all_tenants: schema generation has no request and no tenant; the queryset is empty.
            return self.model.all_tenants.none()
        return self.model.objects.all()

    def admin_only(self) -> None:
        services.require_admin(self.request.user, self.request.membership.tenant_id, doing="do this")


# --- client groups and approval policies -------------------------------------------------------------


class ClientGroupOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    slug = serializers.CharField()
    approver_email = serializers.CharField(help_text="the designated approver of escalated prompts")
    created_at = serializers.DateTimeField()


class ClientGroupIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True, default="")
    approver_email = serializers.EmailField(required=False, allow_blank=True, default="")


class ClientGroupChangeIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    approver_email = serializers.EmailField(required=False, allow_blank=True)


class PolicyOut(serializers.Serializer):
    requires = serializers.ChoiceField(choices=ApprovalRequirement.choices, help_text="what the end user must approve")
    response_deadline_s = serializers.IntegerField()
    allow_escalation = serializers.BooleanField()
    allow_without_user = serializers.BooleanField()
    escalate_after_percent = serializers.IntegerField()


class PolicyIn(serializers.Serializer):
    requires = serializers.ChoiceField(choices=ApprovalRequirement.choices, required=False)
    response_deadline_s = serializers.IntegerField(min_value=30, max_value=MAX_DEADLINE_S, required=False)
    allow_escalation = serializers.BooleanField(required=False)
    allow_without_user = serializers.BooleanField(required=False)
    escalate_after_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)


def group_data(group: ClientGroup) -> dict:
    return {
        "id": group.pk,
        "name": group.name,
        "slug": group.slug,
        "approver_email": group.approver_email,
        "created_at": group.created_at,
    }


def policy_data(group: ClientGroup) -> dict:
    policy = ApprovalPolicy.objects.filter(client_group=group).first()
    if policy is None:
        return dict(DEFAULT_POLICY)
    return {name: getattr(policy, name) for name in services.POLICY_FIELDS}


@extend_schema_view(
    list=extend_schema(summary="List client groups", responses={200: ClientGroupOut(many=True), **LIST_ERRORS}),
    create=extend_schema(
        summary="Add a client group (tenant admins), with the default approval policy",
        request=ClientGroupIn,
        responses={201: ClientGroupOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One client group", parameters=[GROUP_ID], responses={200: ClientGroupOut, **READ_ERRORS}
    ),
    partial_update=extend_schema(
        summary="Rename a client group or change its designated approver (tenant admins)",
        parameters=[GROUP_ID],
        request=ClientGroupChangeIn,
        responses={200: ClientGroupOut, **ERRORS},
    ),
)
class ClientGroupViewSet(AdminViewSet):
    """The tenant's clients: each has endpoints, enrollment tokens and an approval policy."""

    model = ClientGroup
    serializer_class = ClientGroupOut
    http_method_names = ["get", "post", "patch", "head", "options"]

    def _group(self, pk) -> ClientGroup:
        return ClientGroup.objects.get(pk=parse_uuid(pk))

    def list(self, request):
        page = [group_data(g) for g in self.paginate_queryset(ClientGroup.objects.order_by("name", "pk"))]
        return self.get_paginated_response(ClientGroupOut(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(ClientGroupOut(group_data(self._group(pk))).data)

    def create(self, request):
        self.admin_only()
        body = ClientGroupIn(data=request.data)
        body.is_valid(raise_exception=True)
        group = services.client_group_add(actor=request.user, tenant=request.tenant, **body.validated_data)
        return Response(ClientGroupOut(group_data(group)).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        group = self._group(pk)
        self.admin_only()
        body = ClientGroupChangeIn(data=request.data)
        body.is_valid(raise_exception=True)
        group = services.client_group_update(actor=request.user, group=group, **body.validated_data)
        return Response(ClientGroupOut(group_data(group)).data)

    @extend_schema(
        methods=["GET"],
        summary="The client group's approval policy",
        parameters=[GROUP_ID],
        responses={200: PolicyOut, **READ_ERRORS},
    )
    @extend_schema(
        methods=["PATCH"],
        summary="Change the client group's approval policy (tenant admins; a risky change: step-up, security log)",
        parameters=[GROUP_ID],
        request=PolicyIn,
        responses={200: PolicyOut, **ERRORS},
    )
    @action(detail=True, methods=["get", "patch"])
    def policy(self, request, pk=None):
        group = self._group(pk)
        if request.method == "PATCH":
            self.admin_only()
            body = PolicyIn(data=request.data)
            body.is_valid(raise_exception=True)
            services.approval_policy_update(
                actor=request.user,
                group=group,
                changes=dict(body.validated_data),
                step_up=access.api_step_up(request, risky=True),
                address=request_address(request),
            )
        return Response(PolicyOut(policy_data(group)).data)


# --- enrollment tokens -------------------------------------------------------------------------------


class TokenOut(serializers.Serializer):
    id = serializers.UUIDField()
    prefix = serializers.CharField(help_text="the secret's first characters, to tell tokens apart")
    client_group = serializers.UUIDField()
    note = serializers.CharField()
    expires_at = serializers.DateTimeField()
    max_uses = serializers.IntegerField()
    uses = serializers.IntegerField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class InstallOut(serializers.Serializer):
    linux = serializers.CharField(help_text="the install command for Linux, carrying the secret")
    windows = serializers.CharField(help_text="the install command for Windows (MSI), carrying the secret")


class TokenCreatedOut(TokenOut):
    secret = serializers.CharField(help_text="the token for the installer: shown once, only its hash is stored")
    install = InstallOut(help_text="the console's install lines for this token (they carry the secret: shown once)")


class TokenIn(serializers.Serializer):
    client_group = serializers.UUIDField()
    expires_in_hours = serializers.IntegerField(min_value=1, max_value=MAX_TOKEN_DAYS * 24, default=7 * 24)
    max_uses = serializers.IntegerField(min_value=1, max_value=MAX_TOKEN_USES, default=1)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


def token_data(token: EnrollmentToken) -> dict:
    return {
        "id": token.pk,
        "prefix": token.prefix,
        "client_group": token.client_group_id,
        "note": token.note,
        "expires_at": token.expires_at,
        "max_uses": token.max_uses,
        "uses": token.uses,
        "revoked_at": token.revoked_at,
        "created_at": token.created_at,
    }


@extend_schema_view(
    list=extend_schema(
        summary="List enrollment tokens (tenant admins)", responses={200: TokenOut(many=True), **LIST_ERRORS}
    ),
    create=extend_schema(
        summary="Issue an enrollment token (tenant admins); its secret is in this answer only",
        request=TokenIn,
        responses={201: TokenCreatedOut, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="One enrollment token", parameters=[TOKEN_ID], responses={200: TokenOut, **READ_ERRORS}
    ),
)
class EnrollmentTokenViewSet(AdminViewSet):
    """Tokens an installer uses to enroll endpoints into a client group."""

    model = EnrollmentToken
    serializer_class = TokenOut

    def _token(self, pk) -> EnrollmentToken:
        return EnrollmentToken.objects.get(pk=parse_uuid(pk))

    def list(self, request):
        self.admin_only()
        page = [token_data(t) for t in self.paginate_queryset(EnrollmentToken.objects.order_by("-created_at", "pk"))]
        return self.get_paginated_response(TokenOut(page, many=True).data)

    def retrieve(self, request, pk=None):
        token = self._token(pk)
        self.admin_only()
        return Response(TokenOut(token_data(token)).data)

    def create(self, request):
        self.admin_only()
        body = TokenIn(data=request.data)
        body.is_valid(raise_exception=True)
        group = ClientGroup.objects.filter(pk=body.validated_data["client_group"]).first()
        if group is None:
            return error_response(
                status.HTTP_400_BAD_REQUEST,
                "invalid_request",
                "client_group: no such client group",
                field_errors={"client_group": ["no such client group"]},
            )
        token, secret = services.enrollment_token_issue(
            actor=request.user,
            client_group=group,
            expires_in=timedelta(hours=body.validated_data["expires_in_hours"]),
            max_uses=body.validated_data["max_uses"],
            note=body.validated_data["note"],
        )
        server = agent_install.server_url(request)
        install = {
            "linux": agent_install.linux_command(server=server, secret=secret),
            "windows": agent_install.windows_command(server=server, secret=secret, client_group_slug=group.slug),
        }
        data = {**token_data(token), "secret": secret, "install": install}
        return Response(TokenCreatedOut(data).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke an enrollment token (tenant admins); endpoints it enrolled stay",
        parameters=[TOKEN_ID],
        request=None,
        responses={200: TokenOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = self._token(pk)
        self.admin_only()
        services.enrollment_token_revoke(actor=request.user, token=token)
        return Response(TokenOut(token_data(self._token(pk))).data)
