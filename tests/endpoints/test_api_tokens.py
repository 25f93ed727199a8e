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
from endpoints.access import StepUp
from endpoints.api_tokens import api_token_issue, api_token_revoke, api_token_rotate
from endpoints.models import ApiToken, Membership, Role, SecurityEvent, TokenScope
from sessions_app.models import SupportSession
from tests import factories
from tests.endpoints.test_step_up import age_checks

pytestmark = pytest.mark.django_db

V1 = "/api/v1"
CHECKED = StepUp(method="mfa", at=1.0)  # what the console's step-up check returns, for direct calls


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
            actor=world.admin,
            tenant_id=world.tenant.pk,
            owner=world.viewer,
            name="x",
            scope="operator",
            days=1,
            step_up=CHECKED,
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
        api_token_issue(
            actor=world.tech,
            tenant_id=world.tenant.pk,
            owner=world.tech,
            name="x",
            scope="read",
            days=1,
            step_up=CHECKED,
        )
    token, _ = factories.api_token(world.tech)
    with pytest.raises(Forbidden):
        api_token_revoke(actor=world.tech, tenant_id=world.tenant.pk, token_id=token.pk, step_up=CHECKED)
    with pytest.raises(Forbidden):
        api_token_rotate(actor=world.tech, tenant_id=world.tenant.pk, token_id=token.pk, step_up=CHECKED)
    tech_console = Client()
    tech_console.force_login(world.tech)
    assert tech_console.get(reverse("members:tokens")).status_code == 403
    assert tech_console.post(reverse("members:token_revoke", args=[token.pk])).status_code == 403
    assert tech_console.post(reverse("members:token_rotate", args=[token.pk])).status_code == 403
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


def secret_on(page: str) -> str | None:
    found = re.search(r'value="([^"]+)" data-field="secret"', page)
    return found.group(1) if found else None


def test_an_issued_token_is_shown_once_after_a_redirect_and_a_reload_issues_nothing(world):
    response = world.console.post(
        reverse("members:token_issue"),
        {"name": "backup script", "owner": str(world.tech.pk), "scope": "read", "days": "30"},
    )
    # POST-redirect-GET: the answer to the form carries no secret, and reloading it is a GET.
    assert response.status_code == 302 and response["Location"] == reverse("members:tokens")
    assert "tok" not in response.content.decode()
    shown = world.console.get(response["Location"])
    assert shown["Cache-Control"] == "no-store"
    key = secret_on(shown.content.decode())
    assert key is not None
    assert api(key).get(f"{V1}/endpoints/").status_code == 200
    token = ApiToken.all_tenants.get(name="backup script")
    assert token.scope == "read" and token.token.user == world.tech and token.issued_by == world.admin
    assert key not in token.token.digest
    # The reload: the secret is gone (popped from the session), and no second token was issued.
    listing = world.console.get(reverse("members:tokens")).content.decode()
    assert secret_on(listing) is None and key not in listing and token.token.token_key in listing
    assert ApiToken.all_tenants.count() == 1 and AuthToken.objects.count() == 1
    assert "caisey_issued_token" not in world.console.session
    event = SecurityEvent.all_tenants.get(kind="token_issued")
    assert event.person == world.tech and event.detail["scope"] == "read" and event.detail["days"] == 30
    assert event.detail["step_up"]["method"] in ("sign-in", "password")


def test_issuing_needs_a_recent_check(world):
    age_checks(world.console, 3600)
    response = world.console.post(
        reverse("members:token_issue"), {"name": "late", "owner": str(world.admin.pk), "scope": "read", "days": "1"}
    )
    assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/")
    assert not ApiToken.all_tenants.filter(name="late").exists()


def test_revoking_and_rotating_need_a_recent_check(world):
    token, secret = factories.api_token(world.tech)
    age_checks(world.console, 3600)
    for name in ("members:token_revoke", "members:token_rotate"):
        response = world.console.post(reverse(name, args=[token.pk]))
        assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/")
    assert ApiToken.all_tenants.filter(pk=token.pk).exists() and ApiToken.all_tenants.count() == 1
    assert api(secret).get(f"{V1}/endpoints/").status_code == 200
    assert not SecurityEvent.all_tenants.filter(kind__in=["token_revoked", "token_rotated"]).exists()


def test_the_services_refuse_a_person_without_a_check(world):
    token, _ = factories.api_token(world.tech)
    with pytest.raises(Forbidden, match="recent check"):
        api_token_issue(
            actor=world.admin, tenant_id=world.tenant.pk, owner=world.tech, name="x", scope="read", days=1, step_up=None
        )
    with pytest.raises(Forbidden, match="recent check"):
        api_token_revoke(actor=world.admin, tenant_id=world.tenant.pk, token_id=token.pk, step_up=None)
    with pytest.raises(Forbidden, match="recent check"):
        api_token_rotate(actor=world.admin, tenant_id=world.tenant.pk, token_id=token.pk, step_up=None)
    assert ApiToken.all_tenants.filter(pk=token.pk).exists() and ApiToken.all_tenants.count() == 1


def test_an_admin_rotates_a_token_the_old_secret_stops_and_the_new_one_is_shown_once(world):
    token, old_secret = factories.api_token(world.tech, scope=TokenScope.READ, days=10, name="monitoring")
    response = world.console.post(reverse("members:token_rotate", args=[token.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("members:tokens")
    new_secret = secret_on(world.console.get(response["Location"]).content.decode())
    assert new_secret and new_secret != old_secret
    assert api(old_secret).get(f"{V1}/endpoints/").status_code == 401
    assert api(new_secret).get(f"{V1}/endpoints/").status_code == 200
    [rotated] = ApiToken.all_tenants.all()
    assert rotated.pk != token.pk and rotated.name == "monitoring" and rotated.scope == "read"
    assert rotated.token.user == world.tech and rotated.issued_by == world.admin
    lifetime = rotated.token.expiry - rotated.token.created
    assert 9.99 * 86400 < lifetime.total_seconds() <= 10 * 86400
    assert secret_on(world.console.get(reverse("members:tokens")).content.decode()) is None
    event = SecurityEvent.all_tenants.get(kind="token_rotated")
    assert event.actor == world.admin and event.person == world.tech
    assert event.detail["replaces"] == token.token.token_key and "step_up" in event.detail
    assert rotated.token.token_key in event.target


def test_revoking_is_recorded_with_its_check(world):
    token, _ = factories.api_token(world.tech)
    world.console.post(reverse("members:token_revoke", args=[token.pk]))
    event = SecurityEvent.all_tenants.get(kind="token_revoked")
    assert event.detail["step_up"]["method"] in ("sign-in", "password")


def test_another_tenants_token_is_not_rotated(world):
    theirs, secret = factories.api_token(world.other_admin)
    assert world.console.post(reverse("members:token_rotate", args=[theirs.pk])).status_code == 404
    assert api(secret).get(f"{V1}/endpoints/").status_code == 200


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
