"""The OpenAPI document's ``webhooks`` section (OAS 3.1): every event type is there, and payloads
Caisey writes validate against its schemas (JSON Schema 2020-12, which OAS 3.1 schemas are)."""

from __future__ import annotations

import json

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from jsonschema import Draft202012Validator, FormatChecker

from caisey import tenancy
from caisey.actors import Party
from endpoints import services as endpoint_services
from endpoints.models import SecurityEventKind
from endpoints.security_log import security_event_record
from integrations import services
from integrations.events import EVENT_TYPES, TEST_EVENT
from integrations.models import WebhookDelivery
from sessions_app.models import Action
from sessions_app.services import actions as action_services
from sessions_app.services import sharing
from tests import factories

SCHEMA = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


def _validator(event_type: str) -> Draft202012Validator:
    ref = SCHEMA["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return Draft202012Validator({"$ref": ref, "components": SCHEMA["components"]}, format_checker=FormatChecker())


def test_the_document_is_openapi_3_1_with_a_webhook_per_event_type():
    assert SCHEMA["openapi"] == "3.1.0"
    assert set(SCHEMA["webhooks"]) == set(EVENT_TYPES) | {TEST_EVENT}
    for event_type in SCHEMA["webhooks"]:
        body = _validator(event_type).schema["components"]["schemas"]
        name = _validator(event_type).schema["$ref"].rsplit("/", 1)[1]
        assert body[name]["properties"]["type"]["enum"] == [event_type]


def test_a_payload_of_another_type_or_version_does_not_validate():
    validator = _validator("session.opened")
    payload = {"id": "not a uuid", "type": "session.closed", "version": 2, "created_at": "x", "tenant": "y", "data": {}}
    problems = {error.path[0] if error.path else error.validator for error in validator.iter_errors(payload)}
    assert {"id", "type", "version", "tenant", "data"} <= problems  # date-time needs rfc3339-validator


@pytest.fixture
def every_event(admin, tenant):
    """A destination for every event type, and a world that writes one of each but the chat-only ones."""
    hook = services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url="https://1.1.1.1/all", events=list(EVENT_TYPES)
    ).endpoint
    endpoint_services.tenant_ticket_link_set(actor=admin, tenant_id=tenant.pk, template="https://psa.example/{ticket}")
    group = factories.client_group(tenant)
    endpoint = factories.endpoint(group).endpoint
    session = factories.support_session(endpoint)
    factories.incident(tenant, actor=admin, sessions=[session])
    factories.prompt(session, actor=admin)
    action = factories.action(session, actor=admin)
    with tenancy.bind(tenant.pk):
        action_services.action_cancel(actor=admin, action=action)
    run = factories.bulk_run([factories.endpoint(group).endpoint], actor=admin)
    with tenancy.bind(tenant.pk):
        action_services.action_cancel(actor=admin, action=Action.objects.get(bulk_run=run))
    link, _ = factories.share_link(actor=admin, session=session)
    with tenancy.bind(tenant.pk):
        sharing.share_link_record_view(link=link, ip="198.51.100.7", user_agent="Firefox")
    security_event_record(tenant_id=tenant.pk, kind=SecurityEventKind.TOKEN_REVOKED, actor=Party.SYSTEM, target="ci")
    services.webhook_test_send(actor=admin, endpoint=hook)
    with tenancy.system():
        return list(WebhookDelivery.objects.filter(endpoint=hook))


def test_payloads_caisey_writes_validate_against_their_schemas(every_event):
    seen = set()
    for row in every_event:
        errors = [e.message for e in _validator(row.event_type).iter_errors(row.payload)]
        assert errors == [], (row.event_type, errors)
        seen.add(row.event_type)
    assert {"session.opened", "prompt.issued", "bulk_run.finished", "share_link.viewed", "security.event"} <= seen
    assert TEST_EVENT in seen
