"""API tokens with a scope (issue 11 item 13): read-only tokens only read, tenant admins list,
issue (shown once, after a step-up) and revoke any of their tenant's tokens, and the OpenAPI
schema needs a session or a token."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

from caisey.errors import Forbidden, Rejected
from endpoints.api_tokens import api_token_issue, api_token_revoke
from endpoints.models import ApiToken, Membership, Role, SecurityEvent, TokenScope
from sessions_app.models import SupportSession
from tests import factories
from tests.endpoints.test_step_up import age_checks

pytestmark = pytest.mark.django_db

V1 = "/api/v1"


def api(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant(mfa_required=False)
        self.group = factories.client_group(self.tenant)
        self.endpoint = factories.endpoint(self.group).endpoint
        self.admin = Membership.all_tenants.get(tenant=self.tenant, role=Role.ADMIN).user
        self.tech = factories.technician(self.tenant)
        self.viewer = factories.member(self.tenant, role=Role.VIEWER).user
        self.other = factories.tenant(mfa_required=False)
        self.other_admin = Membership.all_tenants.get(tenant=self.other, role=Role.ADMIN).user
        self.console = Client()
        # A real sign-in: the step-up check sees it (a tenant without a required second factor).
        self.console.post("/login/", {"login": self.admin.username, "password": factories.PASSWORD})


@pytest.fixture
def world() -> World:
    return World()


# --- scope enforcement ----------------------------------------------------------------------------


def test_a_read_only_token_reads_but_every_write_is_a_clear_403(world):
    _, secret = factories.api_token(world.tech, scope=TokenScope.READ)
    client = api(secret)
    assert client.get(f"{V1}/endpoints/").status_code == 200
    response = client.post(f"{V1}/sessions/", {"endpoint": str(world.endpoint.pk), "reason": "T-1"}, format="json")
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "this API token is read-only: it cannot change anything"}
    assert not SupportSession.all_tenants.exists()


def test_an_operator_token_writes_within_its_owners_role(world):
    _, secret = factories.api_token(world.tech, scope=TokenScope.OPERATOR)
    response = api(secret).post(f"{V1}/sessions/", {"endpoint": str(world.endpoint.pk), "reason": "T-1"}, format="json")
    assert response.status_code == 201, response.content


def test_a_viewer_cannot_get_an_operator_token(world):
    with pytest.raises(Rejected, match="read-only scope"):
        api_token_issue(
            actor=world.admin, tenant_id=world.tenant.pk, owner=world.viewer, name="x", scope="operator", days=1
        )


def test_a_knox_token_without_a_scope_row_only_reads(world):
    _, secret = AuthToken.objects.create(user=world.tech)
    client = api(secret)
    assert client.get(f"{V1}/endpoints/").status_code == 200
    response = client.post(f"{V1}/sessions/", {"endpoint": str(world.endpoint.pk), "reason": "T"}, format="json")
    assert response.status_code == 403 and "read-only" in response.json()["detail"]


def test_a_token_use_is_noted(world):
    token, secret = factories.api_token(world.tech, scope=TokenScope.READ)
    assert token.last_used_at is None
    api(secret).get(f"{V1}/endpoints/")
    token.refresh_from_db()
    assert token.last_used_at is not None


# --- who manages tokens -----------------------------------------------------------------------------


def test_only_tenant_admins_issue_and_revoke(world):
    with pytest.raises(Forbidden):
        api_token_issue(actor=world.tech, tenant_id=world.tenant.pk, owner=world.tech, name="x", scope="read", days=1)
    token, _ = factories.api_token(world.tech)
    with pytest.raises(Forbidden):
        api_token_revoke(actor=world.tech, tenant_id=world.tenant.pk, token_id=token.pk)
    tech_console = Client()
    tech_console.force_login(world.tech)
    assert tech_console.get(reverse("members:tokens")).status_code == 403
    assert tech_console.post(reverse("members:token_revoke", args=[token.pk])).status_code == 403
    assert ApiToken.all_tenants.filter(pk=token.pk).exists()


def test_an_admin_lists_every_token_of_the_tenant_and_none_of_another(world):
    mine, _ = factories.api_token(world.tech, scope=TokenScope.READ)
    theirs, _ = factories.api_token(world.other_admin)
    page = world.console.get(reverse("members:tokens")).content.decode()
    assert f'data-token="{mine.pk}"' in page and mine.token.token_key in page and world.tech.username in page
    assert "Read-only" in page
    assert f'data-token="{theirs.pk}"' not in page and theirs.token.token_key not in page


def test_an_admin_revokes_any_token_of_the_tenant_at_once(world):
    token, secret = factories.api_token(world.tech)
    response = world.console.post(reverse("members:token_revoke", args=[token.pk]))
    assert response.status_code == 302
    assert api(secret).get(f"{V1}/endpoints/").status_code == 401
    assert not ApiToken.all_tenants.filter(pk=token.pk).exists()
    event = SecurityEvent.all_tenants.get(kind="token_revoked")
    assert event.tenant_id == world.tenant.pk and event.actor == world.admin and event.person == world.tech


def test_another_tenants_token_id_is_not_found(world):
    theirs, secret = factories.api_token(world.other_admin)
    assert world.console.post(reverse("members:token_revoke", args=[theirs.pk])).status_code == 404
    assert api(secret).get(f"{V1}/endpoints/").status_code == 200


def test_an_issued_token_is_shown_once_and_works(world):
    response = world.console.post(
        reverse("members:token_issue"),
        {"name": "backup script", "owner": str(world.tech.pk), "scope": "read", "days": "30"},
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    found = re.search(r'value="([^"]+)" data-field="secret"', response.content.decode())
    assert found is not None
    key = found.group(1)
    assert api(key).get(f"{V1}/endpoints/").status_code == 200
    token = ApiToken.all_tenants.get(name="backup script")
    assert token.scope == "read" and token.token.user == world.tech and token.issued_by == world.admin
    assert key not in token.token.digest
    listing = world.console.get(reverse("members:tokens")).content.decode()
    assert key not in listing and token.token.token_key in listing  # its prefix only, from now on
    event = SecurityEvent.all_tenants.get(kind="token_issued")
    assert event.person == world.tech and event.detail == {"scope": "read", "days": 30}


def test_issuing_needs_a_recent_check(world):
    age_checks(world.console, 3600)
    response = world.console.post(
        reverse("members:token_issue"), {"name": "late", "owner": str(world.admin.pk), "scope": "read", "days": "1"}
    )
    assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/")
    assert not ApiToken.all_tenants.filter(name="late").exists()


def test_bad_issuing_input_changes_nothing(world):
    for data in (
        {"name": "", "owner": str(world.tech.pk), "scope": "read", "days": "1"},
        {"name": "x", "owner": str(world.tech.pk), "scope": "root", "days": "1"},
        {"name": "x", "owner": str(world.tech.pk), "scope": "read", "days": "0"},
        {"name": "x", "owner": "abc", "scope": "read", "days": "1"},
    ):
        world.console.post(reverse("members:token_issue"), data)
    assert (
        world.console.post(
            reverse("members:token_issue"),
            {"name": "x", "owner": str(world.other_admin.pk), "scope": "read", "days": "1"},
        ).status_code
        == 404
    )
    assert not ApiToken.all_tenants.exists()


# --- the schema needs a sign-in -------------------------------------------------------------------------


def test_the_schema_is_refused_anonymously_and_served_with_a_token_or_a_session(world):
    anonymous = APIClient().get("/api/schema/")
    assert anonymous.status_code == 401
    assert "not_authenticated" in anonymous.content.decode()  # in the schema's own format
    _, secret = factories.api_token(world.tech, scope=TokenScope.READ)
    assert api(secret).get("/api/schema/?format=json").status_code == 200
    assert world.console.get("/api/schema/?format=json").status_code == 200


def test_the_command_line_issues_scoped_tokens(world):
    def issue(*args) -> str:
        out = io.StringIO()
        call_command("issue_api_token", *args, stdout=out)
        return out.getvalue().strip()

    read_key = issue("--user", world.tech.username, "--scope", "read", "--name", "monitoring")
    response = api(read_key).post(f"{V1}/sessions/", {"endpoint": str(world.endpoint.pk), "reason": "T"}, format="json")
    assert response.status_code == 403
    viewer_key = issue("--user", world.viewer.username)  # operator by default, read for a viewer
    assert ApiToken.all_tenants.get(token__user=world.viewer).scope == "read"
    assert api(viewer_key).get(f"{V1}/endpoints/").status_code == 200
    issued = SecurityEvent.all_tenants.filter(kind="token_issued", actor_label="cli")
    assert issued.count() == 2
    issue("--user", world.tech.username, "--rotate")
    assert api(read_key).get(f"{V1}/endpoints/").status_code == 401
    assert SecurityEvent.all_tenants.filter(kind="token_revoked", person=world.tech).count() == 1
