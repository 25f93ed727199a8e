"""The versioned REST API: token auth, every route, tenant isolation, roles, errors, the schema."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from bridge.models import OutboxMessage, OutboxStatus
from caisey import tenancy
from endpoints.api_base import TenantScopedAPIMixin
from endpoints.models import AgentMode, Endpoint, EndpointStatus, Role
from sessions_app.models import Action, ActionStatus, BulkRun, SessionStatus, SupportSession, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services import bulk, sessions
from tests import factories

pytestmark = pytest.mark.django_db

V1 = "/api/v1"


def client_for(user) -> APIClient:
    client = APIClient()
    _, token = factories.api_token(user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def counts() -> tuple[int, ...]:
    return (
        SupportSession.all_tenants.count(),
        Action.all_tenants.count(),
        BulkRun.all_tenants.count(),
        TranscriptEntry.all_tenants.count(),
        OutboxMessage.all_tenants.count(),
    )


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant("Acme IT")
        self.group = factories.client_group(self.tenant, name="Dental Practice")
        self.app = factories.endpoint(self.group, hostname="app01", tags="dc erp").endpoint
        self.web = factories.endpoint(self.group, hostname="web01", tags="iis").endpoint
        self.other_group = factories.client_group(self.tenant, name="Law Firm")
        self.law = factories.endpoint(self.other_group, hostname="law01").endpoint
        self.tech = factories.technician(self.tenant)
        self.viewer = factories.member(self.tenant, role=Role.VIEWER).user
        self.api = client_for(self.tech)
        # Another tenant, with a session, an action and a bulk run of its own.
        self.rival = factories.tenant("Rival MSP")
        self.rival_group = factories.client_group(self.rival, name="Rival Client")
        self.rival_endpoint = factories.endpoint(self.rival_group, hostname="rival01", tags="erp").endpoint
        self.rival_tech = factories.technician(self.rival)
        self.rival_session = sessions.session_open(actor=self.rival_tech, endpoint=self.rival_endpoint, reason="R-1")
        self.rival_action = services.action_request(
            actor=self.rival_tech, session=self.rival_session, kind="system_summary", params={}
        )
        self.rival_run = bulk.bulk_run_start(
            actor=self.rival_tech, endpoints=[self.rival_endpoint], kind="disk_usage", params={}, reason="rival"
        )

    def open_session(self, endpoint: Endpoint | None = None) -> dict:
        response = self.api.post(
            f"{V1}/sessions/", {"endpoint": str((endpoint or self.app).pk), "reason": "T-42"}, format="json"
        )
        assert response.status_code == 201, response.content
        return response.json()

    def run(self, session_id: str, kind: str = "tcp_connect", params: dict | None = None) -> dict:
        params = params if params is not None else {"host": "db01", "port": 1433}
        response = self.api.post(
            f"{V1}/sessions/{session_id}/actions/", {"kind": kind, "params": params}, format="json"
        )
        assert response.status_code == 201, response.content
        return response.json()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Every World makes five users: the production hasher would spend seconds on them.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world() -> World:
    return World()


def assert_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "detail"} and isinstance(body["detail"], str)
    if error is not None:
        assert body["error"] == error, body
    return body


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/endpoints/", "/sessions/", "/catalogue/", "/bulk-runs/"])
def test_unauthenticated_requests_get_401(world, path):
    response = APIClient().get(V1 + path)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_a_bad_token_gets_401(world):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert_error(client.get(f"{V1}/endpoints/"), 401, "not_authenticated")


def test_unauthenticated_writes_get_401_and_change_nothing(world):
    before = counts()
    response = APIClient().post(f"{V1}/sessions/", {"endpoint": str(world.app.pk)}, format="json")
    assert_error(response, 401)
    assert counts() == before


def test_a_user_without_membership_is_refused(world, django_user_model):
    loner = django_user_model.objects.create_user("loner", password=factories.PASSWORD)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=loner)[1]}")  # made outside Caisey
    assert_error(client.get(f"{V1}/endpoints/"), 403, "forbidden")


def test_a_signed_in_console_user_can_use_the_api_too(world):
    client = APIClient()
    client.force_login(world.tech)
    assert client.get(f"{V1}/endpoints/").status_code == 200


# --- endpoints and the catalogue ---------------------------------------------------------------------


def test_endpoint_list_shows_presence_health_and_context(world):
    Endpoint.all_tenants.filter(pk=world.app.pk).update(machine_context={"os": "Debian 12"})
    body = world.api.get(f"{V1}/endpoints/").json()
    assert body["count"] == 3
    rows = {row["hostname"]: row for row in body["results"]}
    assert set(rows) == {"app01", "web01", "law01"}
    app = rows["app01"]
    assert app["id"] == str(world.app.pk)
    assert app["presence"] == "offline" and app["last_seen_at"] is None
    assert app["client_group"] == {"id": str(world.group.pk), "name": "Dental Practice", "slug": world.group.slug}
    assert app["tags"] == ["dc", "erp"]
    assert app["machine_context"] == {"os": "Debian 12"}
    assert app["simulated"] is False
    Endpoint.all_tenants.filter(pk=world.web.pk).update(simulated=True)  # as the demo's fleet is enrolled
    assert world.api.get(f"{V1}/endpoints/{world.web.pk}/").json()["simulated"] is True
    assert app["health"]["queue_depth"] == 0 and app["health"]["degraded_reasons"] == []
    assert app["status"] == "enrolled"


def test_endpoint_search_by_hostname_tag_and_client_group(world):
    def hosts(query: str) -> list[str]:
        response = world.api.get(f"{V1}/endpoints/{query}")
        assert response.status_code == 200
        return [row["hostname"] for row in response.json()["results"]]

    assert hosts("?q=erp") == ["app01"]  # never the rival's erp machine
    assert hosts("?q=web") == ["web01"]
    assert hosts(f"?client_group={world.other_group.slug}") == ["law01"]
    assert hosts("?q=nothing-like-this") == []
    assert hosts("?q=%00") == ["app01", "web01", "law01"]


def test_a_recently_seen_endpoint_is_not_offline(world):
    from django.utils import timezone

    Endpoint.all_tenants.filter(pk=world.web.pk).update(last_seen_at=timezone.now(), mode=AgentMode.LAZY)
    body = world.api.get(f"{V1}/endpoints/{world.web.pk}/").json()
    assert body["presence"] == "lazy" and body["last_seen_at"]
    # The same connectivity the console shows: why, and since when.
    assert body["presence_reason"].startswith("connected, heartbeat every") and "presence_since" in body


def test_endpoint_detail(world):
    session = world.open_session()
    response = world.api.get(f"{V1}/endpoints/{world.app.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["hostname"] == "app01" and body["presence"] in ("offline", "lazy", "active")
    assert [s["id"] for s in body["open_sessions"]] == [session["id"]]
    assert body["open_sessions"][0]["opened_by"] == world.tech.username


def test_catalogue_lists_every_kind_with_its_params(world):
    response = world.api.get(f"{V1}/catalogue/")
    assert response.status_code == 200
    kinds = {k["name"]: k for k in response.json()}
    assert {"system_summary", "tcp_connect", "shell"} <= set(kinds)
    tcp = kinds["tcp_connect"]
    assert tcp["category"] == "diagnostic"
    port = next(p for p in tcp["params"] if p["name"] == "port")
    assert port == {**port, "type": "int", "required": True, "minimum": 1, "maximum": 65535}
    assert kinds["shell"]["category"] == "shell"


# --- sessions ---------------------------------------------------------------------------------------------


def test_open_read_note_transcript_and_close_a_session(world):
    opened = world.open_session()
    assert opened["status"] == "open" and opened["endpoint"]["hostname"] == "app01"
    assert opened["opened_by"] == world.tech.username and opened["reason"] == "T-42" and opened["actions"] == []
    sid = opened["id"]

    listed = world.api.get(f"{V1}/sessions/").json()
    assert [s["id"] for s in listed["results"]] == [sid]  # the rival's session is not there
    assert listed["results"][0]["action_count"] == 0
    assert world.api.get(f"{V1}/sessions/?status=closed").json()["count"] == 0
    assert world.api.get(f"{V1}/sessions/?endpoint={world.web.pk}").json()["count"] == 0

    note = world.api.post(f"{V1}/sessions/{sid}/notes/", {"text": "  user reports slow ERP  "}, format="json")
    assert note.status_code == 201
    assert note.json()["text"] == "user reports slow ERP" and note.json()["actor"] == f"user:{world.tech.username}"

    transcript = world.api.get(f"{V1}/sessions/{sid}/transcript/").json()
    entries = transcript["results"]
    assert [(e["index"], e["kind"]) for e in entries] == [(0, "session.opened"), (1, "note")]
    assert entries[1]["data"] == {"text": "user reports slow ERP"}
    assert entries[1]["prev_hash"] == entries[0]["hash"] and len(entries[1]["hash"]) == 64
    assert set(entries[0]) >= {"index", "kind", "actor", "at", "data", "hash"}

    closed = world.api.post(f"{V1}/sessions/{sid}/close/", {"reason": "fixed"}, format="json")
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed" and closed.json()["close_reason"] == "fixed"
    detail = world.api.get(f"{V1}/sessions/{sid}/").json()
    assert detail["status"] == "closed" and detail["closed_at"]

    before = counts()
    body = assert_error(world.api.post(f"{V1}/sessions/{sid}/close/", {}, format="json"), 400, "rejected")
    assert "closed" in body["detail"]
    assert counts() == before


def test_session_error_is_a_400_with_its_message_and_changes_nothing(world):
    sid = world.open_session()["id"]
    world.api.post(f"{V1}/sessions/{sid}/close/", {}, format="json")
    before = counts()
    response = world.api.post(f"{V1}/sessions/{sid}/actions/", {"kind": "system_summary"}, format="json")
    assert assert_error(response, 400, "rejected")["detail"] == "this session is closed"
    assert counts() == before


def test_opening_a_session_on_a_revoked_endpoint_is_refused(world):
    Endpoint.all_tenants.filter(pk=world.web.pk).update(status=EndpointStatus.REVOKED)
    before = counts()
    body = assert_error(world.api.post(f"{V1}/sessions/", {"endpoint": str(world.web.pk)}, format="json"), 400)
    assert "endpoint" in body["field_errors"]
    assert counts() == before


# --- actions ------------------------------------------------------------------------------------------------


def test_run_read_list_and_cancel_an_action(world):
    sid = world.open_session()["id"]
    created = world.run(sid, params={"host": "db01", "port": "1433"})
    assert created["status"] == "queued" and created["kind"] == "tcp_connect" and created["category"] == "diagnostic"
    assert created["params"] == {"host": "db01", "port": 1433, "timeout": 5}  # checked and coerced by the service
    assert created["requested_by"] == world.tech.username and created["session"] == sid
    assert created["output"] == "" and created["truncated"] is False
    assert created["conditions_at_dispatch"]["connectivity"] in ("offline", "lazy", "active", "degraded")

    aid = created["id"]
    body = world.api.get(f"{V1}/actions/{aid}/").json()
    assert set(body) >= {
        "status",
        "exit_code",
        "result",
        "error",
        "output",
        "truncated",
        "started_at",
        "finished_at",
        "duration_s",
        "conditions_at_dispatch",
        "conditions_at_completion",
    }
    listed = world.api.get(f"{V1}/sessions/{sid}/actions/").json()
    assert [a["id"] for a in listed["results"]] == [aid]
    assert [a["id"] for a in world.api.get(f"{V1}/sessions/{sid}/").json()["actions"]] == [aid]

    cancelled = world.api.post(f"{V1}/actions/{aid}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert Action.all_tenants.get(pk=aid).status == ActionStatus.CANCELLED

    before = counts()
    body = assert_error(world.api.post(f"{V1}/actions/{aid}/cancel/"), 400, "rejected")
    assert "already" in body["detail"]
    assert counts() == before


def test_action_with_output_and_result(world):
    from caisey_agent import protocol as p

    sid = world.open_session()["id"]
    aid = world.run(sid, kind="system_summary", params={})["id"]
    # What the agent reports, as the bridge hands it to the services.
    for seq, stream, data in ((0, "status", ""), (1, "stdout", "up 3 days\n")):
        services.action_output_receive(
            endpoint=world.app, body=p.ActionOutput(action_id=aid, seq=seq, stream=stream, data=data)
        )
    services.action_result_receive(
        endpoint=world.app,
        body=p.ActionResult(
            action_id=aid,
            status="succeeded",
            exit_code=0,
            result={"uptime_s": 259200},
            started_at=1.0e9,
            finished_at=1.0e9 + 2,
        ),
    )
    body = world.api.get(f"{V1}/actions/{aid}/").json()
    assert body["status"] == "succeeded" and body["exit_code"] == 0 and body["result"] == {"uptime_s": 259200}
    assert body["output"] == "up 3 days\n" and body["duration_s"] == 2.0
    assert body["conditions_at_completion"] is not None


def test_an_action_gated_by_approval_shows_its_prompt(world):
    factories.policy(world.group, requires="shell")
    sid = world.open_session()["id"]
    assert world.run(sid, kind="system_summary", params={})["approval"] is None  # diagnostics need no approval
    gated = world.run(sid, kind="shell", params={"command": "systemctl restart spooler"})
    assert gated["status"] == "awaiting_approval"
    # The endpoint never connected: its prompt says at once that it could not reach it.
    assert gated["approval"]["state"] == "failed_to_deliver" and gated["approval"]["deadline_at"]
    approval = world.api.get(f"{V1}/actions/{gated['id']}/").json()["approval"]
    assert approval["id"] == gated["approval"]["id"]
    assert approval["reported_at"] is None and approval["late_decision"] == approval["approval_used_by"] == ""


def test_resend_an_action_that_could_not_be_delivered(world):
    sid = world.open_session()["id"]
    aid = world.run(sid)["id"]
    assert_error(world.api.post(f"{V1}/actions/{aid}/resend/"), 400, "rejected")  # not failed: nothing to resend
    action = Action.all_tenants.get(pk=aid)
    OutboxMessage.all_tenants.filter(pk=action.outbox_id).update(status=OutboxStatus.FAILED_TO_DELIVER)
    Action.all_tenants.filter(pk=aid).update(status=ActionStatus.FAILED_TO_DELIVER)
    response = world.api.post(f"{V1}/actions/{aid}/resend/")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert OutboxMessage.all_tenants.get(pk=action.outbox_id).status == OutboxStatus.QUEUED


def test_run_a_batch(world):
    sid = world.open_session()["id"]
    response = world.api.post(
        f"{V1}/sessions/{sid}/batches/",
        {
            "actions": [
                {"kind": "disk_usage"},
                {"kind": "top_processes", "params": {"sort": "memory"}},
            ]
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["session"] == sid
    assert [(a["kind"], a["batch_position"]) for a in body["actions"]] == [("disk_usage", 0), ("top_processes", 1)]
    assert {a["batch"] for a in body["actions"]} == {body["id"]}
    first, second = (Action.all_tenants.get(pk=a["id"]) for a in body["actions"])
    assert first.outbox_id and not second.outbox_id  # the next is sent when the previous one ends

    before = counts()
    assert_error(world.api.post(f"{V1}/sessions/{sid}/batches/", {"actions": []}, format="json"), 400)
    response = world.api.post(
        f"{V1}/sessions/{sid}/batches/",
        {
            "actions": [
                {"kind": "disk_usage"},
                {"kind": "tcp_connect", "params": {"host": "x"}},
            ]
        },
        format="json",
    )
    assert_error(response, 400, "rejected")  # the second item is invalid: nothing of the batch is kept
    assert counts() == before


# --- bulk runs ----------------------------------------------------------------------------------------------


def test_bulk_run_over_a_client_group(world):
    response = world.api.post(
        f"{V1}/bulk-runs/",
        {
            "kind": "dns_resolve",
            "params": {"name": "erp.local"},
            "client_group": world.group.slug,
            "reason": "DNS outage",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["kind"] == "dns_resolve" and run["params"]["name"] == "erp.local" and run["reason"] == "DNS outage"
    assert sorted(r["endpoint"]["hostname"] for r in run["rows"]) == ["app01", "web01"]
    assert run["progress"] == {"total": 2, "done": 0, "waiting": 2}
    assert all(r["status"] == "queued" and r["session"] for r in run["rows"])

    detail = world.api.get(f"{V1}/bulk-runs/{run['id']}/").json()
    assert detail["id"] == run["id"] and len(detail["rows"]) == 2
    listed = world.api.get(f"{V1}/bulk-runs/").json()
    assert [r["id"] for r in listed["results"]] == [run["id"]]  # not the rival's
    assert listed["results"][0]["progress"]["total"] == 2


def test_bulk_run_over_chosen_endpoints(world):
    response = world.api.post(
        f"{V1}/bulk-runs/",
        {
            "kind": "system_summary",
            "endpoints": [str(world.app.pk), str(world.law.pk)],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert sorted(r["endpoint"]["hostname"] for r in response.json()["rows"]) == ["app01", "law01"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "system_summary"},  # neither client_group nor endpoints
        {"kind": "system_summary", "client_group": "x", "endpoints": ["00000000-0000-0000-0000-000000000001"]},
        {"kind": "system_summary", "client_group": "no-such-group"},
        {"kind": "system_summary", "endpoints": []},
        {"kind": "system_summary", "endpoints": ["not-a-uuid"]},
        {"kind": "no_such_kind", "endpoints": ["00000000-0000-0000-0000-000000000001"]},
    ],
)
def test_malformed_bulk_runs_are_400_and_change_nothing(world, body):
    before = counts()
    assert_error(world.api.post(f"{V1}/bulk-runs/", body, format="json"), 400)
    assert counts() == before


def test_bulk_run_with_bad_params_is_rejected_whole(world):
    before = counts()
    response = world.api.post(
        f"{V1}/bulk-runs/", {"kind": "dns_resolve", "client_group": world.group.slug}, format="json"
    )
    assert assert_error(response, 400, "rejected")["detail"] == "name is required"
    assert counts() == before


# --- tenant isolation -------------------------------------------------------------------------------------


def test_another_tenants_objects_are_not_found(world):
    rival = {
        "endpoint": world.rival_endpoint.pk,
        "session": world.rival_session.pk,
        "action": world.rival_action.pk,
        "run": world.rival_run.pk,
    }
    reads = [
        f"/endpoints/{rival['endpoint']}/",
        f"/sessions/{rival['session']}/",
        f"/sessions/{rival['session']}/actions/",
        f"/sessions/{rival['session']}/transcript/",
        f"/actions/{rival['action']}/",
        f"/bulk-runs/{rival['run']}/",
    ]
    for path in reads:
        assert_error(world.api.get(V1 + path), 404, "not_found")
    before = counts()
    writes = [
        (f"/sessions/{rival['session']}/close/", {}),
        (f"/sessions/{rival['session']}/notes/", {"text": "hello"}),
        (f"/sessions/{rival['session']}/actions/", {"kind": "system_summary"}),
        (f"/sessions/{rival['session']}/batches/", {"actions": [{"kind": "system_summary"}]}),
        (f"/actions/{rival['action']}/cancel/", {}),
        (f"/actions/{rival['action']}/resend/", {}),
    ]
    for path, body in writes:
        assert_error(world.api.post(V1 + path, body, format="json"), 404, "not_found")
    # Referenced in a body, the rival's endpoint is exactly as unknown as one that never existed.
    for endpoint_id in (rival["endpoint"], uuid.uuid4()):
        body = assert_error(world.api.post(f"{V1}/sessions/", {"endpoint": str(endpoint_id)}, format="json"), 400)
        assert body["field_errors"] == {"endpoint": ["no such endpoint"]}
        body = assert_error(
            world.api.post(
                f"{V1}/bulk-runs/", {"kind": "system_summary", "endpoints": [str(endpoint_id)]}, format="json"
            ),
            400,
        )
    assert counts() == before
    assert SupportSession.all_tenants.get(pk=rival["session"]).status == SessionStatus.OPEN
    assert Action.all_tenants.get(pk=rival["action"]).status == ActionStatus.QUEUED


def test_another_tenants_objects_never_appear_in_lists(world):
    world.open_session()
    rival_ids = {str(world.rival_endpoint.pk), str(world.rival_session.pk), str(world.rival_run.pk)}
    for path in (
        "/endpoints/",
        "/sessions/",
        "/bulk-runs/",
        f"/sessions/?endpoint={world.rival_endpoint.pk}",
        f"/endpoints/?client_group={world.rival_group.slug}",
        "/endpoints/?q=rival",
    ):
        body = world.api.get(V1 + path).json()
        assert not rival_ids & {row["id"] for row in body["results"]}, path
    assert world.api.get(f"{V1}/endpoints/?q=rival").json()["count"] == 0
    # And the rival sees only its own.
    rival_api = client_for(world.rival_tech)
    assert [e["hostname"] for e in rival_api.get(f"{V1}/endpoints/").json()["results"]] == ["rival01"]
    rival_sessions = {str(s.pk) for s in SupportSession.all_tenants.filter(tenant=world.rival)}
    assert {s["id"] for s in rival_api.get(f"{V1}/sessions/").json()["results"]} == rival_sessions


def test_malformed_ids_are_not_found(world):
    for path in (
        "/endpoints/nope/",
        "/sessions/12345/",
        "/actions/not-a-uuid/",
        "/bulk-runs/x.y/",
        "/sessions/nope/transcript/",
    ):
        assert_error(world.api.get(V1 + path), 404, "not_found")
    assert_error(world.api.post(f"{V1}/actions/nope/cancel/"), 404, "not_found")


def test_the_tenant_binding_ends_with_every_request(world, monkeypatch):
    assert tenancy.current_tenant_id() is None
    world.api.get(f"{V1}/endpoints/")
    assert tenancy.current_tenant_id() is None
    world.api.get(f"{V1}/sessions/{uuid.uuid4()}/")  # handled error
    assert tenancy.current_tenant_id() is None

    from sessions_app.selectors import sessions as selectors

    def boom(**kwargs):
        assert tenancy.current_tenant_id() == world.tenant.pk  # bound while the view runs
        raise RuntimeError("unexpected")

    monkeypatch.setattr(selectors, "session_get", boom)
    client = client_for(world.tech)
    client.raise_request_exception = False
    assert client.get(f"{V1}/sessions/{uuid.uuid4()}/").status_code == 500  # unhandled error
    assert tenancy.current_tenant_id() is None


def _api_views():
    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern), p.callback

    return [(route, cb) for route, cb in walk(get_resolver().url_patterns) if route.startswith("api/v1/")]


def test_every_api_view_binds_the_tenant_through_the_shared_base():
    views = _api_views()
    assert len(views) >= 10
    for route, callback in views:
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        assert view_class is not None and issubclass(view_class, TenantScopedAPIMixin), route


# --- roles ------------------------------------------------------------------------------------------------------


def test_a_viewer_reads_but_cannot_write(world):
    sid = world.open_session()["id"]
    aid = world.run(sid)["id"]
    viewer = client_for(world.viewer)
    for path in (
        "/endpoints/",
        f"/endpoints/{world.app.pk}/",
        "/sessions/",
        f"/sessions/{sid}/",
        f"/actions/{aid}/",
        f"/sessions/{sid}/transcript/",
        "/catalogue/",
        "/bulk-runs/",
    ):
        assert viewer.get(V1 + path).status_code == 200, path
    before = counts()
    writes = [
        ("/sessions/", {"endpoint": str(world.app.pk)}),
        (f"/sessions/{sid}/notes/", {"text": "viewer note"}),
        (f"/sessions/{sid}/actions/", {"kind": "system_summary"}),
        (f"/sessions/{sid}/batches/", {"actions": [{"kind": "system_summary"}]}),
        (f"/sessions/{sid}/close/", {}),
        (f"/actions/{aid}/cancel/", {}),
        (f"/actions/{aid}/resend/", {}),
        ("/bulk-runs/", {"kind": "system_summary", "client_group": world.group.slug}),
    ]
    for path, body in writes:
        assert_error(viewer.post(V1 + path, body, format="json"), 403, "forbidden")
    assert counts() == before


# --- malformed input --------------------------------------------------------------------------------------------


def test_malformed_session_bodies_are_400_and_change_nothing(world):
    before = counts()
    for body in ({}, {"endpoint": "not-a-uuid"}, {"endpoint": str(world.app.pk), "reason": "x" * 501}, [1, 2]):
        response = world.api.post(f"{V1}/sessions/", body, format="json")
        assert_error(response, 400, "invalid_request")
    assert assert_error(world.api.post(f"{V1}/sessions/", {}, format="json"), 400)["field_errors"]["endpoint"]
    response = world.api.post(f"{V1}/sessions/", "{not json", content_type="application/json")
    assert_error(response, 400)
    response = world.api.post(f"{V1}/sessions/", "[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert_error(response, 400)
    response = world.api.post(f"{V1}/sessions/", "endpoint=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415)
    assert counts() == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"kind": "nonsense"},
        {"kind": "tcp_connect", "params": "host=db01"},
        {"kind": "tcp_connect", "params": {"host": "db01"}},  # port is required: the service says so
        {"kind": "tcp_connect", "params": {"host": "db01", "port": 70000}},
        {"kind": "tcp_connect", "params": {"host": "db01", "port": 80, "bogus": 1}},
        {"kind": "tcp_connect", "params": {"host": "db\u0000", "port": 80}},
        {"kind": "system_summary", "expires_in_seconds": 0},
        {"kind": "system_summary", "expires_in_seconds": 10**12},
    ],
)
def test_malformed_action_requests_are_400_and_change_nothing(world, body):
    sid = world.open_session()["id"]
    before = counts()
    assert_error(world.api.post(f"{V1}/sessions/{sid}/actions/", body, format="json"), 400)
    assert counts() == before


def test_non_finite_and_unpaired_surrogate_params_are_400(world):
    sid = world.open_session()["id"]
    before = counts()
    for raw in (
        '{"kind": "tcp_connect", "params": {"host": "db01", "port": 1e400}}',
        '{"kind": "tcp_connect", "params": {"host": "\\ud800", "port": 80}}',
        '{"kind": "tcp_connect", "params": {"\\ud800": 1}}',
        '{"kind": "tcp_connect", "params": {"host": "db01", "port": NaN}}',
    ):
        assert_error(world.api.post(f"{V1}/sessions/{sid}/actions/", raw, content_type="application/json"), 400)
    assert counts() == before


def test_malformed_notes_and_query_parameters(world):
    sid = world.open_session()["id"]
    before = counts()
    for body in ({}, {"text": ""}, {"text": "   "}, {"text": "x" * 10_001}, {"text": ["a"]}):
        assert_error(world.api.post(f"{V1}/sessions/{sid}/notes/", body, format="json"), 400, "invalid_request")
    assert counts() == before
    assert_error(world.api.get(f"{V1}/sessions/?status=bogus"), 400, "invalid_request")
    assert_error(world.api.get(f"{V1}/sessions/?endpoint=bogus"), 400, "invalid_request")


def test_pagination(world):
    body = world.api.get(f"{V1}/endpoints/?limit=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
    body = world.api.get(f"{V1}/endpoints/?limit=2&offset=2").json()
    assert [r["hostname"] for r in body["results"]] == ["law01"]
    for query in ("?offset=99999999999999999999999", "?limit=-1", "?limit=abc&offset=-5"):
        response = world.api.get(f"{V1}/endpoints/{query}")
        assert response.status_code == 200, query


def test_the_exception_handler_maps_domain_errors():
    from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

    from caisey.api import exception_handler
    from caisey.state_machine import IllegalTransition

    def handled(exc):
        response = exception_handler(exc, {})
        return response.status_code, response.data["error"], response.data["detail"]

    assert handled(sessions.SessionError("this session is closed")) == (400, "rejected", "this session is closed")
    assert handled(PermissionDenied("only technicians")) == (403, "forbidden", "only technicians")
    assert handled(ObjectDoesNotExist()) == (404, "not_found", "not found")
    bad_uuid = ValidationError("“%(value)s” is not a valid UUID.", code="invalid", params={"value": "x"})
    assert handled(bad_uuid) == (404, "not_found", "not found")
    assert handled(ValidationError("too long", code="max_length")) == (400, "invalid_request", "too long")
    assert handled(IllegalTransition("SupportSession", "closed", "closed"))[:2] == (409, "conflict")
    assert exception_handler(RuntimeError("a bug"), {}) is None  # stays a 500


def test_methods_not_allowed_get_a_json_405(world):
    assert_error(world.api.delete(f"{V1}/sessions/"), 405, "method_not_allowed")
    assert_error(world.api.get(f"{V1}/actions/{world.rival_action.pk}/cancel/"), 405, "method_not_allowed")


# --- the schema ------------------------------------------------------------------------------------------------


ROUTES = {
    "/api/v1/endpoints/": {"get"},
    "/api/v1/endpoints/{id}/": {"get"},
    "/api/v1/endpoints/{id}/prompt-patterns/": {"get"},
    "/api/v1/catalogue/": {"get"},
    "/api/v1/sessions/": {"get", "post"},
    "/api/v1/sessions/{id}/": {"get"},
    "/api/v1/sessions/{id}/close/": {"post"},
    "/api/v1/sessions/{id}/notes/": {"post"},
    "/api/v1/sessions/{id}/transcript/": {"get"},
    "/api/v1/sessions/{id}/actions/": {"get", "post"},
    "/api/v1/sessions/{id}/batches/": {"post"},
    "/api/v1/sessions/{id}/review/": {"post"},
    "/api/v1/sessions/{id}/share-links/": {"post"},
    "/api/v1/actions/{id}/": {"get"},
    "/api/v1/actions/{id}/cancel/": {"post"},
    "/api/v1/actions/{id}/resend/": {"post"},
    "/api/v1/actions/{id}/wake/": {"post"},
    "/api/v1/bulk-runs/": {"get", "post"},
    "/api/v1/bulk-runs/{id}/": {"get"},
    "/api/v1/follow-ups/": {"get"},
    "/api/v1/follow-ups/{id}/": {"get"},
    "/api/v1/follow-ups/{id}/open/": {"post"},
    "/api/v1/sessions/{id}/ticket/": {"post"},
    "/api/v1/prompts/": {"get"},
    "/api/v1/prompts/{id}/": {"get"},
    "/api/v1/prompts/{id}/cancel/": {"post"},
    "/api/v1/prompts/{id}/reissue/": {"post"},
    "/api/v1/prompts/{id}/resend/": {"post"},
    "/api/v1/prompts/{id}/escalate/": {"post"},
    "/api/v1/prompts/{id}/run-approved/": {"post"},
    "/api/v1/incidents/": {"get", "post"},
    "/api/v1/incidents/{id}/": {"get"},
    "/api/v1/incidents/{id}/sessions/": {"post"},
    "/api/v1/incidents/{id}/sessions/remove/": {"post"},
    "/api/v1/incidents/{id}/status/": {"post"},
    "/api/v1/incidents/{id}/ticket/": {"post"},
    "/api/v1/sessions/{id}/redactions/": {"post"},
    "/api/v1/incidents/{id}/share-links/": {"post"},
    "/api/v1/share-links/{id}/": {"get"},
    "/api/v1/share-links/{id}/revoke/": {"post"},
    "/api/v1/client-groups/": {"get", "post"},
    "/api/v1/client-groups/{id}/": {"get", "patch"},
    "/api/v1/client-groups/{id}/policy/": {"get", "patch"},
    "/api/v1/enrollment-tokens/": {"get", "post"},
    "/api/v1/enrollment-tokens/{id}/": {"get"},
    "/api/v1/enrollment-tokens/{id}/revoke/": {"post"},
    "/api/v1/webhooks/": {"get", "post"},
    "/api/v1/webhooks/{id}/": {"get", "patch", "delete"},
    "/api/v1/webhooks/{id}/rotate-secret/": {"post"},
    "/api/v1/webhooks/{id}/test/": {"post"},
    "/api/v1/webhooks/{id}/deliveries/": {"get"},
    "/api/v1/webhooks/{id}/redeliver/": {"post"},
    "/api/v1/audit-sinks/": {"get", "post"},
    "/api/v1/audit-sinks/{id}/": {"get", "patch", "delete"},
    "/api/v1/audit-sinks/{id}/test/": {"post"},
}
# Paths whose {id} is an integer, not a UUID.
INTEGER_IDS = {"/api/v1/audit-sinks/{id}/", "/api/v1/audit-sinks/{id}/test/"}


def test_the_openapi_schema_is_served_and_describes_every_route(client, world):
    client.force_login(world.tech)  # a sign-in (a session or a token) is needed: tests/endpoints/test_api_tokens.py
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    as_json = client.get("/api/schema/?format=json")
    assert as_json.status_code == 200 and json.loads(as_json.content) == schema
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths) == set(ROUTES)
    for path, methods in ROUTES.items():
        assert set(paths[path]) - {"parameters"} == methods, path
    for path in paths:
        if "{id}" in path:
            for operation in paths[path].values():
                (param,) = [p for p in operation["parameters"] if p["in"] == "path"]
                if path in INTEGER_IDS:
                    assert param["schema"]["type"] == "integer", path
                else:
                    assert param["schema"]["format"] == "uuid", path
    assert "knoxApiToken" in schema["components"]["securitySchemes"]
    try:
        from openapi_spec_validator import validate
    except ImportError:  # optional: not among the project's test dependencies
        return
    validate(schema)


# --- issue_api_token ----------------------------------------------------------------------------------------------


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("issue_api_token", *args, stdout=out)
    return out.getvalue()


def test_issue_api_token_prints_a_working_token_stored_only_as_a_hash(world):
    key = run_command("--user", world.tech.username).strip()
    assert len(key) == 64 and "\n" not in key
    stored = AuthToken.objects.get(user=world.tech, token_key=key[:15])  # knox keeps a prefix to look it up
    assert stored.digest != key and key not in stored.digest
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"{V1}/endpoints/").status_code == 200

    second = run_command("--user", world.tech.username).strip()  # one per script: both work
    assert second != key and AuthToken.objects.filter(user=world.tech).count() >= 2
    assert client.get(f"{V1}/endpoints/").status_code == 200

    rotated = run_command("--user", world.tech.username, "--rotate").strip()
    assert client.get(f"{V1}/endpoints/").status_code == 401  # the old ones stopped working
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated}")
    assert client.get(f"{V1}/endpoints/").status_code == 200


def test_an_expired_api_token_is_refused(world):
    key = run_command("--user", world.tech.username, "--days", "1").strip()
    AuthToken.objects.filter(user=world.tech).update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert_error(client.get(f"{V1}/endpoints/"), 401, "not_authenticated")


def test_issue_api_token_refuses_users_without_membership(world, django_user_model):
    django_user_model.objects.create_user("loner", password=factories.PASSWORD)
    with pytest.raises(CommandError, match="not a member"):
        run_command("--user", "loner")
    with pytest.raises(CommandError, match="no user"):
        run_command("--user", "nobody-at-all")
    assert not AuthToken.objects.filter(user__username="loner").exists()
