"""The webhook events in the OpenAPI document's ``webhooks`` section (OAS 3.1; issue 14 item 1): one
entry per event type, its request body the version-1 envelope with that type's ``data``
(docs/integrations.md, "Payload, version 1"). drf-spectacular renders ``SPECTACULAR_SETTINGS
["WEBHOOKS"]`` (``WEBHOOKS`` below); ``tests/integrations/test_openapi.py`` checks that every event
type is here and that payloads Caisey writes validate against these schemas."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema
from rest_framework import serializers

from integrations.events import EVENT_TYPES, SECURITY_EVENT, TEST_EVENT, VERSION
from sessions_app.api import TicketOut  # the API's {"ticket", "url"}: the same shape in events


class WebhookIncidentRef(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    ticket = TicketOut(allow_null=True)


class WebhookSessionRef(serializers.Serializer):
    id = serializers.UUIDField()
    reason = serializers.CharField()
    ticket = TicketOut(allow_null=True, help_text="the session's ticket and link, or null")
    incidents = WebhookIncidentRef(many=True, help_text="the incidents the session is in, with their tickets")


class WebhookEndpointRef(serializers.Serializer):
    id = serializers.UUIDField()
    hostname = serializers.CharField()


class WebhookTranscriptRef(serializers.Serializer):
    index = serializers.IntegerField(help_text="the entry's position in the session's record")
    kind = serializers.CharField(help_text="the transcript kind (action.result, prompt.pending, ...)")
    actor = serializers.CharField()


class WebhookSessionEventData(serializers.Serializer):
    session = WebhookSessionRef()
    endpoint = WebhookEndpointRef()
    action = serializers.UUIDField(allow_null=True, help_text="the action the entry is about, if any")
    transcript = WebhookTranscriptRef()
    detail = serializers.DictField(help_text="the record entry's data (an action's output left out)")


class WebhookEndpointEventData(serializers.Serializer):
    session = WebhookSessionRef(allow_null=True, help_text="the open session whose record told it; null for none")
    endpoint = WebhookEndpointRef()
    action = serializers.UUIDField(allow_null=True)
    transcript = WebhookTranscriptRef(allow_null=True, help_text="null when no session's record told it")
    detail = serializers.DictField(help_text="from, to and why (figures when a session's record told it)")


class WebhookBulkRunRef(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    rerun_of = serializers.UUIDField(allow_null=True)
    runbook_version = serializers.UUIDField(allow_null=True)


class WebhookBulkRunFinishedData(serializers.Serializer):
    bulk_run = WebhookBulkRunRef()
    actions = serializers.IntegerField(help_text="how many actions the run had")
    by_status = serializers.DictField(child=serializers.IntegerField(), help_text="actions per final status")


class WebhookShareLinkRef(serializers.Serializer):
    id = serializers.UUIDField()
    label = serializers.CharField()  # type: ignore[assignment]  # the link's label, as a field named so
    session = serializers.UUIDField(allow_null=True)
    incident = serializers.UUIDField(allow_null=True)
    expires_at = serializers.DateTimeField()
    ticket = TicketOut(allow_null=True, help_text="the shared session's or incident's ticket")


class WebhookShareLinkViewedData(serializers.Serializer):
    share_link = WebhookShareLinkRef()
    format = serializers.ChoiceField(choices=["page", "pdf"])
    address = serializers.CharField(help_text="the client's address")
    user_agent = serializers.CharField()


class WebhookSecurityEventData(serializers.Serializer):
    kind = serializers.CharField(help_text="the security log's kind: login_failed, lockout, token_issued, ...")
    actor = serializers.CharField(help_text="who did it (user:alice, system, anonymous, ...)")
    audit_event_id = serializers.UUIDField(help_text="the same event's event_id in the audit stream")
    person = serializers.CharField(allow_null=True, help_text="the member it concerns")
    address = serializers.CharField(allow_null=True)
    target = serializers.CharField()
    detail = serializers.DictField()


class WebhookTestEventData(serializers.Serializer):
    webhook = serializers.UUIDField(help_text="the destination the test was sent to")
    requested_by = serializers.CharField()


def _data_serializer(event_type: str) -> type[serializers.Serializer]:
    if event_type.startswith("endpoint."):
        return WebhookEndpointEventData
    return {
        "bulk_run.finished": WebhookBulkRunFinishedData,
        "share_link.viewed": WebhookShareLinkViewedData,
        SECURITY_EVENT: WebhookSecurityEventData,
        TEST_EVENT: WebhookTestEventData,
    }.get(event_type, WebhookSessionEventData)


def _component_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in event_type.replace("_", ".").split(".")) + "Event"


def envelope_serializer(event_type: str) -> type[serializers.Serializer]:
    """The version-1 envelope of ``event_type`` (its own component, named after the type)."""
    fields = {
        "id": serializers.UUIDField(help_text="the event's id: the same on every retry; drop duplicates by it"),
        "type": serializers.ChoiceField(choices=[event_type]),
        "version": serializers.ChoiceField(choices=[VERSION], help_text="the payload schema's version"),
        "created_at": serializers.DateTimeField(help_text="when it happened"),
        "tenant": serializers.UUIDField(),
        "data": _data_serializer(event_type)(),
    }
    return type(_component_name(event_type), (serializers.Serializer,), fields)


SIGNED = (
    'Signed: `Caisey-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` (two `v1` '
    "during a secret rotation); also `Caisey-Event` and `Caisey-Event-Id`. Answer 2xx to acknowledge; "
    "anything else is retried with backoff (docs/integrations.md, Webhooks)."
)


def _webhook(event_type: str, meaning: str) -> OpenApiWebhook:
    return OpenApiWebhook(
        name=event_type,
        decorator=extend_schema(
            summary=meaning,
            description=SIGNED,
            request=envelope_serializer(event_type),
            responses={
                200: OpenApiResponse(description="any 2xx acknowledges it; any other answer is a failed attempt"),
            },
        ),
    )


WEBHOOKS = [
    _webhook(event_type, meaning)
    for event_type, meaning in {**EVENT_TYPES, TEST_EVENT: "The console's or the API's test send"}.items()
]
