"""Single sign-on rules per tenant (the flow against a real provider is in
tests/browser/test_identity.py): configuration checks, who qualifies and with which role, and
that a tenant's provider signs in only that tenant's people."""

from __future__ import annotations

import pytest
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialLogin
from django.test import Client

from caisey.actors import Party
from caisey.errors import Forbidden, Rejected
from endpoints import people
from endpoints.access import StepUp
from endpoints.identity import SocialAccountAdapter
from endpoints.models import Membership, Role, TenantSSO
from tests import factories

pytestmark = pytest.mark.django_db


def configure(tenant, **overrides) -> TenantSSO:
    options = {
        "actor": Party.OPERATOR,
        "issuer": "https://login.example/tenant",
        "client_id": "cid",
        "secret": "s3cret",
        "allowed_domains": "@MSP.example other.example",
        "role_mapping": {"caisey-admins": "admin", "helpdesk": "technician", "auditors": "viewer"},
        "default_role": "viewer",
    }
    return people.tenant_sso_configure(tenant=tenant, **{**options, **overrides})


def test_configuration_lands_in_allauths_app_and_caiseys_rules():
    tenant = factories.tenant()
    sso = configure(tenant)
    app = SocialApp.objects.get(provider_id=f"tenant-{tenant.slug}")
    assert app.provider == "openid_connect" and app.client_id == "cid" and app.secret == "s3cret"
    assert app.settings["server_url"] == "https://login.example/tenant" and app.settings["oauth_pkce_enabled"]
    assert sso.allowed_domains == "msp.example other.example"
    configure(tenant, client_id="cid-2")  # replaced, not duplicated
    assert SocialApp.objects.filter(provider_id=f"tenant-{tenant.slug}").get().client_id == "cid-2"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"issuer": "http://login.example"}, "https"),
        ({"role_mapping": {"x": "root"}}, "unknown role"),
        ({"allowed_domains": "", "role_mapping": {}}, "say who may sign in"),
    ],
)
def test_bad_configuration_is_refused(overrides, message):
    with pytest.raises(Rejected, match=message):
        configure(factories.tenant(), **overrides)


def test_only_the_tenants_admins_configure_it():
    tenant = factories.tenant()
    with pytest.raises(Forbidden):
        configure(tenant, actor=factories.member(tenant, role=Role.TECHNICIAN).user)
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    with pytest.raises(Forbidden, match="recent check"):  # a person needs a step-up check too
        configure(tenant, actor=admin)
    assert configure(tenant, actor=admin, step_up=StepUp(method="mfa", at=1.0)).tenant == tenant


@pytest.mark.parametrize(
    "claims, role",
    [
        ({"groups": ["helpdesk"], "email": "x@elsewhere.example"}, "technician"),
        ({"groups": ["helpdesk", "caisey-admins"]}, "admin"),  # the highest mapped role
        ({"groups": "auditors"}, "viewer"),  # a single group as a string
        ({"groups": [], "email": "ann@msp.example", "email_verified": True}, "viewer"),  # domain, default role
        ({"groups": [], "email": "ann@msp.example", "email_verified": False}, None),  # unverified e-mail
        ({"groups": ["sales"], "email": "eve@evil.example", "email_verified": True}, None),
        ({}, None),
    ],
)
def test_who_qualifies_and_with_which_role(claims, role):
    sso = configure(factories.tenant())
    assert people.sso_role_for(sso, claims) == role


def test_no_default_role_means_the_domain_alone_does_not_qualify():
    sso = configure(factories.tenant(), default_role="")
    assert people.sso_role_for(sso, {"email": "ann@msp.example", "email_verified": True}) is None


def sociallogin_for(sso: TenantSSO, user, uid: str = "sub-1") -> SocialLogin:
    account = SocialAccount(provider=sso.app.provider_id, uid=uid, extra_data={"userinfo": {"groups": ["helpdesk"]}})
    return SocialLogin(user=user, account=account)


def test_a_tenants_provider_cannot_sign_in_another_tenants_member():
    ours, theirs = configure(factories.tenant()), factories.tenant()
    outsider = factories.member(theirs).user
    SocialAccount.objects.create(user=outsider, provider=ours.app.provider_id, uid="sub-1")
    login = sociallogin_for(ours, None)
    login.lookup()
    assert login.is_existing
    with pytest.raises(ImmediateHttpResponse) as refused:
        SocialAccountAdapter().pre_social_login(None, login)
    assert refused.value.response["Location"] == "/login/?sso=refused"


def test_the_sso_form_sends_to_the_tenants_provider_keeping_the_post():
    tenant = factories.tenant()
    configure(tenant)
    client = Client()
    response = client.post("/login/sso/", {"organisation": tenant.slug.upper()})
    assert response.status_code == 307
    assert response["Location"] == f"/accounts/oidc/tenant-{tenant.slug}/login/"
    unknown = client.post("/login/sso/", {"organisation": "nobody"})
    assert unknown.status_code == 302 and unknown["Location"] == "/login/"


def test_the_configure_sso_command_keeps_the_secret_off_the_command_line(monkeypatch):
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    tenant = factories.tenant()
    args = ["configure_sso", "--tenant", tenant.slug, "--issuer", "https://idp.example", "--client-id", "cid"]
    with pytest.raises(CommandError, match="CAISEY_SSO_CLIENT_SECRET"):
        call_command(*args, "--allowed-domains", "msp.example", "--default-role", "viewer")
    monkeypatch.setenv("CAISEY_SSO_CLIENT_SECRET", "from-env")
    with pytest.raises(CommandError, match="say who may sign in"):
        call_command(*args)
    out = StringIO()
    call_command(*args, "--role-mapping", '{"helpdesk": "technician"}', stdout=out)
    assert f"/accounts/oidc/tenant-{tenant.slug}/login/callback/" in out.getvalue()
    assert SocialApp.objects.get(provider_id=f"tenant-{tenant.slug}").secret == "from-env"
    assert TenantSSO.all_tenants.get(tenant=tenant).role_mapping == {"helpdesk": "technician"}
