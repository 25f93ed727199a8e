"""The REST API of a tenant admin's setup (endpoints/api_admin.py): client groups, approval
policies, enrollment tokens. Each operation: the happy path, another tenant's id (404), a
technician or viewer (403), bad input (400, nothing changed)."""

from __future__ import annotations

import logging
import time

import pytest

from endpoints.access import LOGIN_AT
from endpoints.models import ApprovalPolicy, ClientGroup, EnrollmentToken, Role, SecurityEvent
from endpoints.services import endpoint_enroll
from tests import factories
from tests.api.test_api import V1, World, assert_error, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class AdminWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.admin = factories.member(self.tenant, role=Role.ADMIN).user
        self.admin_api = client_for(self.admin)
        self.rival_token, _ = factories.token(self.rival_group)


@pytest.fixture
def world() -> AdminWorld:
    return AdminWorld()


def rows() -> tuple:
    return (
        sorted(ClientGroup.all_tenants.values_list("pk", "name", "slug", "approver_email")),
        sorted(ApprovalPolicy.all_tenants.values_list("pk", "requires", "response_deadline_s", "allow_escalation")),
        sorted(EnrollmentToken.all_tenants.values_list("pk", "revoked_at")),
        SecurityEvent.all_tenants.count(),
    )


# --- client groups -----------------------------------------------------------------------------------


def test_list_add_and_change_client_groups(world):
    listed = world.api.get(f"{V1}/client-groups/").json()  # technicians read them
    assert sorted(g["name"] for g in listed["results"]) == ["Dental Practice", "Law Firm"]
    created = world.admin_api.post(
        f"{V1}/client-groups/", {"name": "Bakery", "approver_email": "owner@bakery.test"}, format="json"
    )
    assert created.status_code == 201, created.content
    group = created.json()
    assert group["slug"] == "bakery" and group["approver_email"] == "owner@bakery.test"
    assert ApprovalPolicy.all_tenants.filter(client_group_id=group["id"]).exists()  # the default policy
    changed = world.admin_api.patch(f"{V1}/client-groups/{group['id']}/", {"name": "Bakery Ltd"}, format="json")
    assert changed.status_code == 200 and changed.json()["name"] == "Bakery Ltd" and changed.json()["slug"] == "bakery"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "ok", "slug": "not a slug"},
        {"name": "ok", "approver_email": "x"},
        {"name": "Taken", "slug": "TAKEN"},  # the slug of a client group of the tenant
    ],
)
def test_bad_client_groups_are_400_and_change_nothing(world, body):
    body = {k: (world.group.slug if v == "TAKEN" else v) for k, v in body.items()}
    before = rows()
    assert_error(world.admin_api.post(f"{V1}/client-groups/", body, format="json"), 400)
    assert rows() == before


def test_bad_client_group_changes_are_400(world):
    before = rows()
    for body in ({"name": ""}, {"approver_email": "nope"}, {"name": "x" * 201}):
        assert_error(world.admin_api.patch(f"{V1}/client-groups/{world.group.pk}/", body, format="json"), 400)
    assert rows() == before


def test_only_a_tenant_admin_changes_client_groups(world):
    apis = (world.api, client_for(world.viewer))
    before = rows()
    for api in apis:
        assert api.get(f"{V1}/client-groups/{world.group.pk}/").status_code == 200
        assert_error(api.post(f"{V1}/client-groups/", {"name": "New"}, format="json"), 403, "forbidden")
        assert_error(api.patch(f"{V1}/client-groups/{world.group.pk}/", {"name": "X"}, format="json"), 403)
        assert_error(
            api.patch(f"{V1}/client-groups/{world.group.pk}/policy/", {"requires": "none"}, format="json"), 403
        )
    assert rows() == before


def test_another_tenants_client_group_is_not_found(world):
    before = rows()
    rival = world.rival_group.pk
    assert_error(world.admin_api.get(f"{V1}/client-groups/{rival}/"), 404, "not_found")
    assert_error(world.admin_api.patch(f"{V1}/client-groups/{rival}/", {"name": "mine"}, format="json"), 404)
    assert_error(world.admin_api.get(f"{V1}/client-groups/{rival}/policy/"), 404)
    assert_error(world.admin_api.patch(f"{V1}/client-groups/{rival}/policy/", {"requires": "none"}, format="json"), 404)
    assert "Rival" not in world.admin_api.get(f"{V1}/client-groups/").content.decode()
    assert rows() == before


# --- approval policies --------------------------------------------------------------------------------


def test_read_and_change_a_policy_with_a_security_event(world):
    url = f"{V1}/client-groups/{world.group.pk}/policy/"
    assert world.api.get(url).json()["requires"] == "commands"  # technicians read it
    response = world.admin_api.patch(url, {"requires": "shell", "escalate_after_percent": 20}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "requires": "shell",
        "response_deadline_s": 300,
        "allow_escalation": False,
        "allow_without_user": False,
        "escalate_after_percent": 20,
    }
    event = SecurityEvent.all_tenants.filter(tenant=world.tenant, kind="policy_changed").get()
    assert event.detail["fields"] == ["requires", "escalate_after_percent"] and "step_up" not in event.detail
    before = rows()
    world.admin_api.patch(url, {"requires": "shell"}, format="json")  # no change, no event
    assert rows() == before


@pytest.mark.parametrize(
    "body",
    [
        {"requires": "sometimes"},
        {"response_deadline_s": 0},
        {"response_deadline_s": 10**9},
        {"escalate_after_percent": 101},
        {"allow_escalation": "maybe"},
    ],
)
def test_bad_policies_are_400_and_change_nothing(world, body):
    before = rows()
    assert_error(world.admin_api.patch(f"{V1}/client-groups/{world.group.pk}/policy/", body, format="json"), 400)
    assert rows() == before


def test_a_browser_session_needs_the_step_up_to_change_a_policy(client, world):
    """The console's rule: an admin whose sign-in is older than the tenant's step-up window is
    refused (a token is not: test_read_and_change_a_policy_with_a_security_event)."""
    client.force_login(world.admin)
    session = client.session
    session[LOGIN_AT] = time.time() - 2 * world.tenant.step_up_window_s
    session.save()
    before = rows()
    response = client.patch(
        f"{V1}/client-groups/{world.group.pk}/policy/", {"requires": "none"}, content_type="application/json"
    )
    assert_error(response, 403, "forbidden")
    assert "recent check" in response.json()["detail"]
    assert rows() == before


# --- enrollment tokens ------------------------------------------------------------------------------


def test_issue_list_and_revoke_an_enrollment_token(world, caplog):
    caplog.set_level(logging.DEBUG)
    response = world.admin_api.post(
        f"{V1}/enrollment-tokens/",
        {"client_group": str(world.group.pk), "max_uses": 3, "note": "rollout"},
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("cet_") and created["prefix"] == secret[:8] and created["max_uses"] == 3
    assert secret in created["install"]["linux"] and secret in created["install"]["windows"]
    assert secret not in caplog.text  # shown once, never logged
    token = EnrollmentToken.all_tenants.get(pk=created["id"])
    assert secret not in str(token.__dict__)  # only its hash is stored
    listed = world.admin_api.get(f"{V1}/enrollment-tokens/").json()["results"]
    assert created["id"] in [t["id"] for t in listed] and all("secret" not in t for t in listed)
    assert str(world.rival_token.pk) not in str(listed)
    # The secret enrolls an endpoint into the group; revoked, it enrolls nothing more.
    assert (
        endpoint_enroll(token_secret=secret, machine_id="machine-0001", hostname="new01").endpoint.client_group_id
        == world.group.pk
    )
    revoked = world.admin_api.post(f"{V1}/enrollment-tokens/{created['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with pytest.raises(Exception, match="revoked|not valid|invalid"):
        endpoint_enroll(token_secret=secret, machine_id="machine-0002", hostname="new02")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"client_group": "nope"},
        {"client_group": "00000000-0000-4000-8000-000000000000"},
        "rival",
        {"client_group": "G", "max_uses": 0},
        {"client_group": "G", "expires_in_hours": 0},
        {"client_group": "G", "expires_in_hours": 10**6},
        {"client_group": "G", "note": "x" * 201},
    ],
)
def test_bad_enrollment_tokens_are_400_and_issue_nothing(world, body):
    if body == "rival":
        body = {"client_group": str(world.rival_group.pk)}
    body = {k: (str(world.group.pk) if v == "G" else v) for k, v in body.items()}
    before = rows()
    assert_error(world.admin_api.post(f"{V1}/enrollment-tokens/", body, format="json"), 400)
    assert rows() == before


def test_only_a_tenant_admin_handles_enrollment_tokens(world):
    token, _ = factories.token(world.group)
    apis = (world.api, client_for(world.viewer))
    before = rows()
    for api in apis:
        assert_error(api.get(f"{V1}/enrollment-tokens/"), 403)
        assert_error(api.get(f"{V1}/enrollment-tokens/{token.pk}/"), 403)
        assert_error(api.post(f"{V1}/enrollment-tokens/", {"client_group": str(world.group.pk)}, format="json"), 403)
        assert_error(api.post(f"{V1}/enrollment-tokens/{token.pk}/revoke/"), 403)
    assert rows() == before


def test_another_tenants_enrollment_token_is_not_found(world):
    before = rows()
    assert_error(world.admin_api.get(f"{V1}/enrollment-tokens/{world.rival_token.pk}/"), 404, "not_found")
    assert_error(world.admin_api.post(f"{V1}/enrollment-tokens/{world.rival_token.pk}/revoke/"), 404, "not_found")
    assert rows() == before
