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


# --- the console page (tenant admins) -----------------------------------------------------------------


def signed_in(user) -> Client:
    client = Client()
    client.post("/login/", {"login": user.username, "password": factories.PASSWORD})
    return client


SSO_FORM = {
    "issuer": "https://login.example/t1/v2.0",
    "client_id": "console-cid",
    "client_secret": "console-s3cret",
    "allowed_domains": "msp.example",
    "group_claim": "roles",
    "role_mapping": "caisey-admins = admin\nhelpdesk = technician\n",
    "default_role": "viewer",
}


def test_a_tenant_admin_sets_up_sso_in_the_console_and_the_secret_is_never_shown_back():
    from endpoints.models import SecurityEvent

    tenant = factories.tenant(mfa_required=False)
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    client = signed_in(admin)
    page = client.get("/members/sso/").content.decode()
    assert f"/accounts/oidc/tenant-{tenant.slug}/login/callback/" in page
    response = client.post("/members/sso/", {**SSO_FORM, "accept_idp_mfa": "on"})
    assert response.status_code == 302 and response["Location"] == "/members/sso/"
    sso = TenantSSO.all_tenants.select_related("app").get(tenant=tenant)
    assert sso.app.client_id == "console-cid" and sso.app.secret == "console-s3cret"
    assert sso.app.settings["server_url"] == "https://login.example/t1/v2.0"
    assert sso.role_mapping == {"caisey-admins": "admin", "helpdesk": "technician"}
    assert sso.group_claim == "roles" and sso.default_role == "viewer" and sso.accept_idp_mfa
    page = client.get("/members/sso/").content.decode()
    assert "console-s3cret" not in page and "console-cid" in page and "helpdesk = technician" in page
    # Saved again with the secret left blank: the stored one is kept.
    client.post("/members/sso/", {**SSO_FORM, "client_secret": "", "client_id": "cid-2"})
    sso.app.refresh_from_db()
    assert sso.app.client_id == "cid-2" and sso.app.secret == "console-s3cret"
    first, second = SecurityEvent.all_tenants.filter(kind="sso_configured").order_by("at", "pk")
    assert first.detail["what"] == "added" and first.detail["secret_changed"] and first.actor == admin
    assert second.detail["what"] == "changed" and not second.detail["secret_changed"]
    assert first.detail["step_up"]["method"] in ("sign-in", "password")
    assert "console-s3cret" not in str(first.detail) and "console-s3cret" not in first.target


def test_sso_set_up_needs_a_recent_check_and_an_admin():
    from tests.endpoints.test_step_up import age_checks

    tenant = factories.tenant(mfa_required=False)
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    client = signed_in(admin)
    age_checks(client, 3600)
    response = client.post("/members/sso/", SSO_FORM)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/")
    tech = signed_in(factories.member(tenant, role=Role.TECHNICIAN).user)
    assert tech.get("/members/sso/").status_code == 403
    assert tech.post("/members/sso/", SSO_FORM).status_code == 403
    assert not TenantSSO.all_tenants.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"role_mapping": "helpdesk => root"}, "unknown role"),
        ({"role_mapping": "just-a-group"}, "group = role"),
        ({"client_secret": ""}, "client secret"),
        ({"client_id": ""}, "client id"),
        ({"issuer": "http://idp.example"}, "https"),
    ],
)
def test_bad_sso_input_changes_nothing(change, message):
    tenant = factories.tenant(mfa_required=False)
    client = signed_in(Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user)
    response = client.post("/members/sso/", {**SSO_FORM, **change}, follow=True)
    assert message in response.content.decode()
    assert not TenantSSO.all_tenants.filter(tenant=tenant).exists() and not SocialApp.objects.exists()


# --- every sign-in re-applies the mapping; the provider's amr claim ------------------------------------


def returning(sso: TenantSSO, user, *, groups, amr=None, uid: str = "sub-9") -> SocialLogin:
    """A returning person's sign-in as allauth hands it to the adapter: the account found by its
    uid, with what the provider says now (its ID token and userinfo)."""
    SocialAccount.objects.get_or_create(user=user, provider=sso.app.provider_id, uid=uid)
    id_token = {"sub": uid, **({"amr": amr} if amr is not None else {})}
    account = SocialAccount(
        provider=sso.app.provider_id, uid=uid, extra_data={"userinfo": {"groups": groups}, "id_token": id_token}
    )
    login = SocialLogin(account=account)
    login.lookup()
    assert login.is_existing
    return login


def sign_in_request(rf):
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/accounts/oidc/callback/")
    request.session = SessionStore()
    return request


def test_a_returning_persons_role_follows_their_groups_at_every_sign_in(rf):
    from endpoints.models import SecurityEvent

    tenant = factories.tenant()
    sso = configure(tenant)
    user = factories.member(tenant, role=Role.TECHNICIAN).user
    SocialAccountAdapter().pre_social_login(sign_in_request(rf), returning(sso, user, groups=["caisey-admins"]))
    user.refresh_from_db()
    assert Membership.all_tenants.get(user=user).role == "admin" and user.is_staff
    assert user.user_permissions.filter(content_type__model="approvalpolicy").exists()
    promoted = SecurityEvent.all_tenants.get(kind="role_changed", person=user)
    assert promoted.detail["before"] == "technician" and promoted.detail["after"] == "admin"
    assert promoted.detail["groups"] == ["caisey-admins"] and promoted.actor_label == "system"
    SocialAccountAdapter().pre_social_login(sign_in_request(rf), returning(sso, user, groups=["auditors"]))
    user.refresh_from_db()
    assert Membership.all_tenants.get(user=user).role == "viewer" and not user.is_staff
    assert not user.user_permissions.exists()
    # The same groups again: nothing changes, nothing is recorded.
    SocialAccountAdapter().pre_social_login(sign_in_request(rf), returning(sso, user, groups=["auditors"]))
    assert SecurityEvent.all_tenants.filter(kind="role_changed", person=user).count() == 2


def test_a_person_removed_from_the_group_is_deactivated_and_refused(
    rf, monkeypatch, django_capture_on_commit_callbacks
):
    from endpoints.models import SecurityEvent

    tenant = factories.tenant()
    sso = configure(tenant, allowed_domains="", default_role="")
    user = factories.member(tenant, role=Role.ADMIN).user
    rings: list[int] = []
    monkeypatch.setattr("endpoints.people.sign_in_changed", lambda *, user_id: rings.append(user_id))
    with pytest.raises(ImmediateHttpResponse) as refused, django_capture_on_commit_callbacks(execute=True):
        SocialAccountAdapter().pre_social_login(sign_in_request(rf), returning(sso, user, groups=["sales"]))
    assert refused.value.response["Location"] == "/login/?sso=refused"
    user.refresh_from_db()
    assert not user.is_active and rings == [user.pk]  # signed out everywhere (sockets rung)
    event = SecurityEvent.all_tenants.get(kind="member_deactivated", person=user)
    assert event.detail["by"] == sso.app.provider_id and event.detail["groups"] == ["sales"]
    # Their group back at the provider does not bring them back: a tenant admin reactivates.
    with pytest.raises(ImmediateHttpResponse):
        SocialAccountAdapter().pre_social_login(sign_in_request(rf), returning(sso, user, groups=["helpdesk"]))
    user.refresh_from_db()
    assert not user.is_active


@pytest.mark.parametrize(
    "amr, mfa",
    [
        (["pwd", "mfa"], True),
        (["pwd", "otp"], True),
        (["hwk"], True),
        (["swk", "pwd"], True),
        (["pwd"], False),
        (None, False),
        ("mfa", True),
    ],
)
def test_the_providers_amr_claim_is_noted_for_the_sign_in(rf, amr, mfa):
    from endpoints.access import IDP_SIGN_IN

    tenant = factories.tenant()
    sso = configure(tenant)
    user = factories.member(tenant, role=Role.TECHNICIAN).user
    request = sign_in_request(rf)
    SocialAccountAdapter().pre_social_login(request, returning(sso, user, groups=["helpdesk"], amr=amr))
    note = request.session[IDP_SIGN_IN]
    assert note["mfa"] is mfa and note["amr"] == ([amr] if isinstance(amr, str) else amr or [])
    assert note["provider"] == sso.app.provider_id and note["user_id"] == user.pk


def signed_in_by_sso(rf, sso, user, *, amr):
    """pre_social_login, then Django's login (what allauth calls): the request signed in."""
    from django.contrib.auth import login

    request = sign_in_request(rf)
    SocialAccountAdapter().pre_social_login(request, returning(sso, user, groups=["helpdesk"], amr=amr))
    request.user = user
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.membership = Membership.all_tenants.select_related("tenant").get(user=user)
    return request


@pytest.mark.parametrize(
    "accept, amr, stands_in",
    [(True, ["pwd", "mfa"], True), (False, ["pwd", "mfa"], False), (True, ["pwd"], False)],
)
def test_the_providers_mfa_stands_in_for_a_second_factor_only_where_the_tenant_accepts_it(rf, accept, amr, stands_in):
    from endpoints.access import second_factor_missing, step_up_require
    from endpoints.models import SecurityEvent

    tenant = factories.tenant(mfa_required=True)
    sso = configure(tenant, accept_idp_mfa=accept)
    user = factories.member(tenant, role=Role.TECHNICIAN).user
    request = signed_in_by_sso(rf, sso, user, amr=amr)
    login = SecurityEvent.all_tenants.filter(kind="login", person=user).latest("at")
    assert login.detail == {"sso": sso.app.provider_id, "amr": amr, "idp_mfa": "mfa" in amr}
    missing = second_factor_missing(user=user, membership=request.membership, session=request.session)
    assert missing is not stands_in
    # A step-up names the provider's check only where it counts; otherwise the sign-in is a sign-in
    # (and a member without a factor of a tenant that requires one is sent to enrol first).
    assert (step_up_require(request).method == "idp-mfa") is stands_in


def test_a_password_sign_in_after_an_abandoned_sso_inherits_nothing(rf):
    from django.contrib.auth import login

    from endpoints.access import IDP_SIGN_IN, second_factor_missing

    tenant = factories.tenant(mfa_required=True)
    sso = configure(tenant, accept_idp_mfa=True)
    sso_user = factories.member(tenant).user
    other = factories.member(tenant).user  # no linked account
    request = sign_in_request(rf)
    SocialAccountAdapter().pre_social_login(request, returning(sso, sso_user, groups=["helpdesk"], amr=["mfa"]))
    request.user = other
    login(request, other, backend="django.contrib.auth.backends.ModelBackend")
    assert IDP_SIGN_IN not in request.session
    membership = Membership.all_tenants.select_related("tenant").get(user=other)
    assert second_factor_missing(user=other, membership=membership, session=request.session)


def test_a_first_sign_in_creates_the_membership_and_binds_the_providers_note(rf):
    from django.contrib.auth import login

    from endpoints.access import IDP_SIGN_IN

    tenant = factories.tenant(mfa_required=True)
    sso = configure(tenant, accept_idp_mfa=True)
    account = SocialAccount(
        provider=sso.app.provider_id,
        uid="sub-new",
        extra_data={
            "userinfo": {
                "sub": "sub-new",
                "email": "newcomer@msp.example",
                "email_verified": True,
                "groups": ["helpdesk"],
            },
            "id_token": {"sub": "sub-new", "amr": ["pwd", "mfa"]},
        },
    )
    from django.contrib.auth import get_user_model

    sociallogin = SocialLogin(account=account, user=get_user_model()(username="newcomer", email="newcomer@msp.example"))
    sociallogin.lookup()
    assert not sociallogin.is_existing
    request = sign_in_request(rf)
    adapter = SocialAccountAdapter()
    adapter.pre_social_login(request, sociallogin)
    assert request.session[IDP_SIGN_IN]["user_id"] is None  # not known before the account exists
    user = adapter.save_user(request, sociallogin)
    assert Membership.all_tenants.get(user=user).role == "technician"
    request.user = user
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    assert request.session[IDP_SIGN_IN]["user_id"] == user.pk and request.session[IDP_SIGN_IN]["mfa"]
