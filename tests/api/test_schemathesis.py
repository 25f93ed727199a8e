"""Schemathesis against the live OpenAPI schema: no generated request makes the API fail (5xx).

The schema is the one /api/schema/ serves (generated in-process: it needs a sign-in), and every
operation in it is exercised (Schemathesis' coverage and fuzzing phases, valid and
invalid data) authenticated as a technician with a token. Well-formed ids in a case are
pointed at real objects of the technician's tenant, so the handlers behind the lookups
see the generated bodies and query strings; fuzzed cases also run once with the ids as
generated (unknown: the 404 paths), and malformed ids always stay as generated.
"""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from endpoints.models import Role
from sessions_app.services import actions as services
from sessions_app.services import bulk, sessions
from tests import factories

MAX_EXAMPLES = 15


@pytest.fixture
def world(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    endpoint = factories.endpoint(group, hostname="app01", tags="dc erp").endpoint
    factories.endpoint(group, hostname="web01")
    tech = factories.technician(tenant)
    session = sessions.session_open(actor=tech, endpoint=endpoint, reason="T-1")
    action = services.action_request(actor=tech, session=session, kind="tcp_connect", params={"host": "db", "port": 1})
    sessions.session_add_note(actor=tech, session=session, text="a note")
    run = bulk.bulk_run_start(actor=tech, endpoints=[endpoint], kind="disk_usage", params={}, reason="bulk")
    # Ids of real objects, by the collection their path starts with.
    follow_up = factories.follow_up(session, actor=tech, due=True)
    prompt = factories.prompt(session, actor=tech)
    incident = factories.incident(tenant, actor=tech, sessions=[session])
    enrollment_token, _ = factories.token(group)
    link, _ = factories.share_link(actor=tech, session=session)
    admin = factories.member(tenant, role=Role.ADMIN).user
    webhook, _ = factories.webhook(tenant)
    # A collector that refuses at once (loopback, allowed explicitly): a test send ends quickly.
    sink = factories.audit_sink(tenant, actor=admin, host="127.0.0.1", port=9, allow_private=True)
    settings.CAISEY = {**settings.CAISEY, "AUDIT_SEND_TIMEOUT_S": 2.0}
    ids = {
        "share-links": link.pk,
        "client-groups": group.pk,
        "enrollment-tokens": enrollment_token.pk,
        "prompts": prompt.pk,
        "incidents": incident.pk,
        "endpoints": endpoint.pk,
        "sessions": session.pk,
        "actions": action.pk,
        "bulk-runs": run.pk,
        "follow-ups": follow_up.pk,
        "webhooks": webhook.pk,
        "audit-sinks": sink.pk,
    }
    # Django's test client does the same: the request signals would otherwise close the
    # test's database connection (and its transaction) between two requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield {
            "token": factories.api_token(tech)[1],
            "admin_token": factories.api_token(admin)[1],
            "ids": ids,
            "client_group": group.slug,
            "client_group_id": group.pk,
        }
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


# The schema /api/schema/ serves (to signed-in people and token holders only, so it cannot be
# fetched before the test database and a token exist): drf-spectacular's generator and JSON
# renderer, the same code the view runs; it needs no database. Cases run against the
# in-process application.
RAW_SCHEMA = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)
schema.app = WSGIHandler()
schema.location = "/api/schema/"


# Collections only tenant admins use: their operations run with an admin's token, so the handlers
# behind the role check see the generated bodies (as a technician's they would all be 403).
ADMIN_COLLECTIONS = {"webhooks", "audit-sinks"}


def _is_id(value) -> bool:
    """A well-formed id: a UUID, or a positive integer (audit sinks, deliveries)."""
    return _is_uuid(value) or (isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63)


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def with_real_ids(case, world) -> None:
    """Point the case at real objects wherever it holds a well-formed id (malformed ones stay)."""
    ids = world["ids"]
    params = case.path_parameters or {}
    if "id" in params and _is_id(params["id"]):
        params["id"] = str(ids[case.operation.path.split("/")[3]])
    body = case.body
    if isinstance(body, dict):
        if "endpoint" in body and _is_uuid(body["endpoint"]):
            body["endpoint"] = str(ids["endpoints"])
        if "session" in body and _is_uuid(body["session"]):
            body["session"] = str(ids["sessions"])
        if "client_group" in body and _is_uuid(body["client_group"]):
            body["client_group"] = str(world["client_group_id"])
        endpoints = body.get("endpoints")
        if isinstance(endpoints, list) and endpoints and all(_is_uuid(e) for e in endpoints):
            body["endpoints"] = [str(ids["endpoints"])]
        elif isinstance(body.get("client_group"), str):
            body["client_group"] = world["client_group"]


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_never_answers_with_a_server_error(case, world):
    admin_only = case.operation.path.split("/")[3] in ADMIN_COLLECTIONS
    headers = {"Authorization": f"Token {world['admin_token' if admin_only else 'token']}"}
    phase = getattr(getattr(case.meta, "phase", None), "name", "")
    if case.method.upper() == case.operation.method.upper():
        if phase == "fuzzing":
            # As generated first: unknown ids, the 404 paths.
            case.validate_response(case.call(headers=headers), checks=[not_a_server_error], headers=headers)
        with_real_ids(case, world)
    case.validate_response(case.call(headers=headers), checks=[not_a_server_error], headers=headers)


def test_every_collection_with_ids_points_at_a_real_object(world):
    """Each operation on an object is run with a real one of the technician's tenant, not only as
    an unknown id (a 404 before any handler runs): a new collection adds its object to ``world``."""
    collections = {path.split("/")[3] for path in RAW_SCHEMA["paths"] if "{id}" in path}
    missing = collections - set(world["ids"])
    assert not missing, f"add a real object of these collections to the Schemathesis world's ids: {missing}"
    assert {"prompts", "incidents", "share-links", "client-groups", "enrollment-tokens"} <= collections
    assert ADMIN_COLLECTIONS <= collections
