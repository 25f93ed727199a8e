"""The operator's commands: create_tenant, create_client_group, issue_enrollment_token."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from caisey import secrets
from endpoints import services
from endpoints.models import ClientGroup, EnrollmentToken, Membership, Role, Tenant
from tests import factories

pytestmark = pytest.mark.django_db


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def test_create_tenant_creates_the_tenant_and_its_admin():
    out = run(
        "create_tenant",
        "--name",
        "Acme MSP",
        "--slug",
        "acme",
        "--admin-username",
        "alice",
        "--admin-email",
        "alice@acme.test",
        "--admin-password",
        "s3cret-enough-pass",
    )
    tenant = Tenant.all_tenants.get(slug="acme")
    assert tenant.name == "Acme MSP"
    assert f"tenant acme ({tenant.pk}) created" in out
    assert "password" not in out  # the operator chose it, so it is not echoed
    user = get_user_model().objects.get(username="alice")
    assert user.check_password("s3cret-enough-pass") and user.is_staff and not user.is_superuser
    membership = Membership.all_tenants.get(user=user)
    assert membership.tenant == tenant and membership.role == Role.ADMIN


def test_create_tenant_generates_and_prints_a_password_when_omitted():
    out = run("create_tenant", "--name", "Beta IT", "--admin-username", "bob")
    assert Tenant.all_tenants.get(slug="beta-it").name == "Beta IT"
    password = out.split("admin password: ")[1].strip()
    assert len(password) >= 16
    assert get_user_model().objects.get(username="bob").check_password(password)


def test_create_tenant_twice_is_a_command_error():
    run(
        "create_tenant",
        "--name",
        "Acme",
        "--slug",
        "acme",
        "--admin-username",
        "alice",
        "--admin-password",
        "pw-long-enough",
    )
    with pytest.raises(CommandError, match="already exists"):
        run(
            "create_tenant",
            "--name",
            "Acme 2",
            "--slug",
            "acme",
            "--admin-username",
            "alice2",
            "--admin-password",
            "pw-long-enough",
        )
    with pytest.raises(CommandError, match="already exists"):
        run(
            "create_tenant",
            "--name",
            "Other",
            "--slug",
            "other",
            "--admin-username",
            "alice",
            "--admin-password",
            "pw-long-enough",
        )
    assert Tenant.all_tenants.count() == 1


def test_create_client_group():
    tenant = factories.tenant()
    out = run(
        "create_client_group", "--tenant", tenant.slug, "--name", "Contoso Ltd", "--approver-email", "it@contoso.test"
    )
    group = ClientGroup.all_tenants.get(tenant=tenant)
    assert (group.name, group.slug, group.approver_email) == ("Contoso Ltd", "contoso-ltd", "it@contoso.test")
    assert f"client group contoso-ltd ({group.pk}) created in {tenant.slug}" in out


def test_create_client_group_for_an_unknown_tenant_is_a_command_error():
    with pytest.raises(CommandError, match="no tenant with slug 'nope'"):
        run("create_client_group", "--tenant", "nope", "--name", "Contoso")
    assert ClientGroup.all_tenants.count() == 0


# Transactional: client_group_create is not wrapped in its own atomic block, so inside the
# test's outer transaction the IntegrityError would poison every later query.
@pytest.mark.django_db(transaction=True)
def test_create_client_group_twice_in_a_tenant_is_a_command_error_but_fine_in_another():
    a, b = factories.tenant(), factories.tenant()
    run("create_client_group", "--tenant", a.slug, "--name", "Contoso")
    with pytest.raises(CommandError, match="already exists"):
        run("create_client_group", "--tenant", a.slug, "--name", "Contoso")
    run("create_client_group", "--tenant", b.slug, "--name", "Contoso")
    assert ClientGroup.all_tenants.filter(slug="contoso").count() == 2


def test_issue_enrollment_token_prints_only_the_token_and_the_token_enrolls(client):
    group = factories.client_group(factories.tenant())
    out = run(
        "issue_enrollment_token",
        "--tenant",
        group.tenant.slug,
        "--client-group",
        group.slug,
        "--max-uses",
        "3",
        "--expires-hours",
        "2",
        "--note",
        "rollout",
    )
    secret = out[:-1]
    assert out == secret + "\n" and "\n" not in secret and " " not in secret
    assert secret.startswith("cet_")

    token = EnrollmentToken.all_tenants.get(token_hash=secrets.digest(secret))
    assert token.client_group == group and token.tenant_id == group.tenant_id
    assert token.max_uses == 3 and token.note == "rollout"
    remaining = (token.expires_at - timezone.now()).total_seconds()
    assert 2 * 3600 - 60 < remaining <= 2 * 3600

    response = client.post(
        "/api/agent/v1/enroll",
        {"token": secret, "machine_id": "machine-0001-abcdef", "hostname": "pc01"},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["client_group"] == group.name


def test_issue_enrollment_token_for_an_unknown_tenant_or_group_is_a_command_error():
    group = factories.client_group(factories.tenant())
    other_tenant = factories.tenant()
    with pytest.raises(CommandError, match="no client group"):
        run("issue_enrollment_token", "--tenant", "nope", "--client-group", group.slug)
    with pytest.raises(CommandError, match="no client group"):
        run("issue_enrollment_token", "--tenant", group.tenant.slug, "--client-group", "nope")
    # A group of another tenant cannot be reached by naming it under the wrong tenant.
    with pytest.raises(CommandError, match="no client group"):
        run("issue_enrollment_token", "--tenant", other_tenant.slug, "--client-group", group.slug)
    assert EnrollmentToken.all_tenants.count() == 0


@pytest.mark.parametrize("args", [["--max-uses", "0"], ["--expires-hours", "0"], ["--expires-hours", "-1"]])
def test_issue_enrollment_token_with_invalid_limits_is_a_command_error(args):
    group = factories.client_group(factories.tenant())
    with pytest.raises(CommandError):
        run("issue_enrollment_token", "--tenant", group.tenant.slug, "--client-group", group.slug, *args)
    assert EnrollmentToken.all_tenants.count() == 0


def test_commands_work_with_no_tenant_bound():
    # Management commands run outside any request: they must not trip the tenant scope.
    run(
        "create_tenant",
        "--name",
        "Gamma",
        "--slug",
        "gamma",
        "--admin-username",
        "gina",
        "--admin-password",
        "pw-long-enough",
    )
    run("create_client_group", "--tenant", "gamma", "--name", "Shop")
    out = run("issue_enrollment_token", "--tenant", "gamma", "--client-group", "shop")
    result = services.endpoint_enroll(token_secret=out.strip(), machine_id="machine-0009-zzzz", hostname="till01")
    assert result.endpoint.client_group.slug == "shop"
