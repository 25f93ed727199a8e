"""The agent's enrollment exchange: token in, persistent identity and credential out."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from caisey import ratelimit
from endpoints import services


class EnrollRequest(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    machine_id = serializers.RegexField(r"^[A-Za-z0-9_.:-]{8,64}$")
    hostname = serializers.CharField(max_length=255)
    replace = serializers.BooleanField(default=False)


class EnrollResponse(serializers.Serializer):
    endpoint_id = serializers.UUIDField()
    credential = serializers.CharField()
    tenant = serializers.CharField()
    client_group = serializers.CharField()
    bridge_path = serializers.CharField()
    replaced = serializers.BooleanField()


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "unknown")


# As for public links (sessions_app/views/public.py): each attempt counts against its address and
# the token's first characters, so one client guessing tokens from an address others share (an
# office NAT during a rollout) exhausts only its own guesses; the address as a whole gets ten times
# the budget. The address is the client's, also behind a trusted proxy (caisey/proxies.py).
ENROLL_RATE_PREFIX_CHARS = len("cet_") + 4
ENROLL_ADDRESS_FACTOR = 10


def enroll_allowed(ip: str, token: object) -> bool:
    limit, window = settings.CAISEY["RATE_ENROLL_PER_IP"]
    prefix = token[:ENROLL_RATE_PREFIX_CHARS] if isinstance(token, str) else ""
    per_token = ratelimit.hit("enroll", f"{ip}|{prefix}", limit=limit, window=window)
    per_address = ratelimit.hit("enroll:address", ip, limit=limit * ENROLL_ADDRESS_FACTOR, window=window)
    return per_token and per_address


class EnrollView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def post(self, request):
        token = request.data.get("token") if isinstance(request.data, dict) else None
        if not enroll_allowed(client_ip(request), token):
            return Response(
                {"error": "rate_limited", "detail": "too many enrollment attempts; wait a minute"}, status=429
            )
        form = EnrollRequest(data=request.data)
        if not form.is_valid():
            return Response({"error": "invalid_request", "detail": form.errors}, status=status.HTTP_400_BAD_REQUEST)
        # A refused enrollment (EnrollmentError, a Rejected) is answered by the API's one error
        # mapping (caisey.api.exception_handler): {"error": code, "detail": message}, its status.
        result = services.endpoint_enroll(
            token_secret=form.validated_data["token"],
            machine_id=form.validated_data["machine_id"],
            hostname=form.validated_data["hostname"],
            replace=form.validated_data["replace"],
            address=client_ip(request),
        )
        endpoint = result.endpoint
        body = EnrollResponse(
            {
                "endpoint_id": endpoint.pk,
                "credential": result.credential,
                "tenant": endpoint.tenant.name,
                "client_group": endpoint.client_group.name,
                "bridge_path": "/ws/agent/",
                "replaced": result.replaced,
            }
        ).data
        return Response(body, status=status.HTTP_200_OK if result.replaced else status.HTTP_201_CREATED)
