"""Identity: the second factor a tenant requires, the one login (the Django admin's too), login
throttling and lockout, and Django's password validators on every way a person is created."""

from __future__ import annotations

import re
from io import StringIO

import pyotp
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from caisey import tenancy
from caisey.errors import Rejected
from endpoints import services
from endpoints.models import Membership, Role, Tenant
from tests import factories
from tests.bridge.test_console_consumer import ConsoleSocket, session_id_for

pytestmark = pytest.mark.django_db


def login(client: Client, username: str, password: str = factories.PASSWORD, **extra):
    return client.post("/login/", {"login": username, "password": password}, **extra)


def error_text(response) -> str:
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.content.decode(), re.S)
    return match.group(1).strip() if match else ""


# --- the tenant setting ---------------------------------------------------------------------------


def test_a_new_tenant_requires_a_second_factor_by_default():
    with tenancy.system():
        tenant = services.tenant_create(name="New MSP", admin_username="newadmin", admin_password="long-enough-pw-1")
    assert tenant.mfa_required is True


def test_create_tenant_says_whether_the_second_factor_is_required():
    out = StringIO()
    call_command("create_tenant", "--name", "Req MSP", "--admin-username", "req", stdout=out)
    assert "second factor required" in out.getvalue()
    assert Tenant.all_tenants.get(slug="req-msp").mfa_required
    out = StringIO()
    call_command("create_tenant", "--name", "Opt MSP", "--admin-username", "opt", "--mfa-optional", stdout=out)
    assert "second factor optional" in out.getvalue()
    assert not Tenant.all_tenants.get(slug="opt-msp").mfa_required


# --- password validators (defect: create_tenant and membership creation skipped them) --------------


@pytest.mark.parametrize("password", ["short", "password123", "12345678"])
def test_tenant_create_runs_the_password_validators_and_creates_nothing(password):
    with pytest.raises(Rejected, match="password not accepted"), tenancy.system():
        services.tenant_create(name="Weak MSP", admin_username="weak", admin_password=password)
    assert not Tenant.all_tenants.filter(name="Weak MSP").exists()
    assert not get_user_model().objects.filter(username="weak").exists()


def test_membership_create_runs_the_password_validators():
    tenant = factories.tenant()
    with pytest.raises(Rejected, match="too short"), tenancy.system():
        services.membership_create(tenant=tenant, username="tiny", password="abc")
    with pytest.raises(Rejected, match="too similar"), tenancy.system():
        services.membership_create(tenant=tenant, username="carolinemiller", password="carolinemiller1")
    assert not get_user_model().objects.filter(username__in=["tiny", "carolinemiller"]).exists()


def test_create_tenant_command_refuses_a_weak_password():
    with pytest.raises(CommandError, match="password not accepted"):
        call_command("create_tenant", "--name", "Weak", "--admin-username", "w", "--admin-password", "qwerty")
    assert not Tenant.all_tenants.filter(name="Weak").exists()


# --- enrolment before the console ----------------------------------------------------------------


@pytest.fixture
def strict():
    """A tenant that requires a second factor, with an endpoint, and a technician without one."""
    tenant = factories.tenant(mfa_required=True)
    factories.endpoint(factories.client_group(tenant), hostname="strict-dc01")
    tech = factories.member(tenant, role=Role.TECHNICIAN).user
    return {"tenant": tenant, "tech": tech}


@pytest.mark.parametrize("path", ["/", "/sessions/", "/admin/"])
def test_a_member_without_a_second_factor_enrols_first(client, strict, path):
    client.force_login(strict["tech"])
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/?next=")
    page = client.get(response["Location"]).content.decode()
    assert "requires a second factor" in page
    assert "/accounts/2fa/totp/activate/" in page and "/accounts/2fa/webauthn/add/" in page


def test_the_api_with_a_session_answers_403_until_enrolled(client, strict):
    client.force_login(strict["tech"])
    response = client.get("/api/v1/endpoints/")
    assert response.status_code == 403 and response.json()["error"] == "second_factor_required"


def test_once_enrolled_the_console_opens(client, strict):
    factories.totp(strict["tech"])
    client.force_login(strict["tech"])
    assert "strict-dc01" in client.get("/").content.decode()


def test_recovery_codes_alone_do_not_count(client, strict):
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    RecoveryCodes.activate(strict["tech"])
    client.force_login(strict["tech"])
    assert client.get("/").status_code == 302


def test_a_tenant_that_does_not_require_it_lets_members_in(client):
    tenant = factories.tenant(mfa_required=False)
    client.force_login(factories.member(tenant).user)
    assert client.get("/").status_code == 200


def test_the_servers_operator_enrols_too(client):
    root = get_user_model().objects.create_superuser(username="root", password=factories.PASSWORD)
    client.force_login(root)
    assert client.get("/admin/").status_code == 302
    factories.totp(root)
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_console_socket_refuses_a_member_without_the_required_second_factor():
    from asgiref.sync import sync_to_async

    @sync_to_async
    def setup():
        tenant = factories.tenant(mfa_required=True)
        user = factories.member(tenant).user
        return user, session_id_for(user)

    user, session_id = await setup()
    connected, code = await ConsoleSocket(session_id).connect()
    assert not connected and code == 4403
    await sync_to_async(factories.totp)(user)
    socket = await ConsoleSocket(session_id).open()
    await socket.comm.disconnect()


# --- logging in with a second factor ----------------------------------------------------------------


def test_login_asks_for_the_authenticator_code(client, strict):
    secret = factories.totp(strict["tech"])
    response = login(client, strict["tech"].username)
    assert response.status_code == 302 and response["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/").status_code == 302  # not signed in yet: the code is missing
    response = client.post(
        "/accounts/2fa/authenticate/", {"code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"}
    )
    assert response.status_code == 200 and "Incorrect code" in response.content.decode()
    response = client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302 and response["Location"] == "/"
    assert "strict-dc01" in client.get("/").content.decode()


# --- the one login: the Django admin has none of its own -----------------------------------------


def test_the_admin_login_sends_people_to_the_one_login(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=%2Fadmin%2F"


def test_a_password_posted_to_the_admin_login_signs_nobody_in(client):
    tenant = factories.tenant()
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    response = client.post("/admin/login/", {"username": admin.username, "password": factories.PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert "_auth_user_id" not in client.session


def test_nobody_signs_up(client):
    response = client.get("/accounts/signup/")
    assert "Sign Up Closed" in response.content.decode() or response.status_code == 403


# --- throttling and lockout (defect: 20 wrong passwords, then the right one, none throttled) ------


def test_twenty_wrong_passwords_then_the_right_one_is_refused(client):
    tenant = factories.tenant()
    user = factories.member(tenant).user
    answers = [login(client, user.username, "wrong-password").status_code for _ in range(20)]
    assert set(answers) == {200}
    response = login(client, user.username)
    assert response.status_code == 200 and "Too many failed login attempts" in error_text(response)
    assert "_auth_user_id" not in client.session


def test_the_lockout_is_per_account_another_account_still_logs_in(client):
    tenant = factories.tenant()
    victim, other = factories.member(tenant).user, factories.member(tenant).user
    for _ in range(5):
        login(client, victim.username, "wrong-password", REMOTE_ADDR="203.0.113.5")
    assert "Too many" in error_text(login(client, victim.username, REMOTE_ADDR="203.0.113.6"))  # any address
    assert login(client, other.username, REMOTE_ADDR="203.0.113.7").status_code == 302


def test_the_throttle_is_per_client_address(client):
    """One address guessing many accounts is stopped after 10 failures a minute; another
    address is not."""
    tenant = factories.tenant()
    user = factories.member(tenant).user
    for n in range(10):
        login(client, f"nobody-{n}", "wrong-password", REMOTE_ADDR="198.51.100.9")
    assert "Too many" in error_text(login(client, user.username, REMOTE_ADDR="198.51.100.9"))
    assert login(Client(), user.username, REMOTE_ADDR="198.51.100.10").status_code == 302


def test_a_wrong_user_and_a_wrong_password_get_the_same_answer(client):
    tenant = factories.tenant()
    user = factories.member(tenant).user
    wrong_password = login(client, user.username, "wrong-password")
    wrong_user = login(Client(), "no-such-user", "wrong-password")
    assert wrong_password.status_code == wrong_user.status_code == 200
    assert error_text(wrong_password) == error_text(wrong_user) != ""
    # and once locked out, the same again
    for _ in range(5):
        login(client, user.username, "wrong-password", REMOTE_ADDR="192.0.2.1")
        login(client, "no-such-user", "wrong-password", REMOTE_ADDR="192.0.2.2")
    assert error_text(login(client, user.username, REMOTE_ADDR="192.0.2.3")) == error_text(
        login(client, "no-such-user", REMOTE_ADDR="192.0.2.4")
    )
