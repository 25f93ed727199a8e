"""The tenant security log (issue 11 item 5): each kind recorded by its real trigger, with the
client's address; tenant admins read and filter it; nobody sees another tenant's events, and a
failed sign-in with an unknown name is the operators' (no tenant)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pyotp
import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY
from allauth.socialaccount.models import SocialAccount, SocialLogin
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from caisey.actors import Party
from endpoints import people
from endpoints.models import ApprovalPolicy, Membership, Role, SecurityEvent, SecurityEventKind, TenantSSO
from endpoints.security_log import security_event_record
from endpoints.tasks import security_log_prune
from tests import factories
from tests.endpoints.test_enrollment import enroll
from tests.endpoints.test_step_up import age_checks

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.20"


def login(client: Client, username: str, password: str = factories.PASSWORD, address: str = ADDRESS):
    return client.post("/login/", {"login": username, "password": password}, REMOTE_ADDR=address)


def events(kind: str, **filters) -> list[SecurityEvent]:
    return list(SecurityEvent.all_tenants.filter(kind=kind, **filters))


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant(mfa_required=False)
        self.admin = Membership.all_tenants.get(tenant=self.tenant, role=Role.ADMIN).user
        self.tech = factories.technician(self.tenant)
        self.console = Client()
        login(self.console, self.admin.username)


@pytest.fixture
def world() -> World:
    return World()


# --- each kind, by its real trigger ------------------------------------------------------------------


def test_a_sign_in_is_recorded_with_the_clients_address(world):
    [event] = events("login", person=world.admin)
    assert event.tenant_id == world.tenant.pk and event.actor == world.admin and event.address == ADDRESS


def test_a_sign_out_is_recorded(world):
    world.console.post("/logout/", REMOTE_ADDR=ADDRESS)
    [event] = events("logout", person=world.admin)
    assert event.address == ADDRESS and event.tenant_id == world.tenant.pk


def test_failed_sign_ins_and_the_lockout_they_reach(world):
    for _ in range(5):
        login(Client(), world.tech.username, "wrong-password", address="198.51.100.7")
    failures = events("login_failed", person=world.tech)
    assert len(failures) == 5 and {e.address for e in failures} == {"198.51.100.7"}
    assert {e.actor_label for e in failures} == {"anonymous"} and failures[0].tenant_id == world.tenant.pk
    [lockout] = events("lockout", person=world.tech)
    assert lockout.detail == {"failures": 5, "window_s": 300}
    login(Client(), world.tech.username, "wrong-password")  # refused by allauth before any check: no more rows
    assert len(events("lockout", person=world.tech)) == 1


def test_a_failed_sign_in_with_an_unknown_name_has_no_tenant_and_no_admin_sees_it(world):
    login(Client(), "nobody-here", "wrong-password")
    [event] = events("login_failed", tenant__isnull=True)
    assert event.target == "unknown user 'nobody-here'" and event.address == ADDRESS
    page = world.console.get(reverse("members:security_log") + "?kind=login_failed").content.decode()
    assert "nobody-here" not in page


def test_second_factor_changes_are_recorded(world, django_capture_on_commit_callbacks):
    client = Client()
    login(client, world.tech.username)
    client.post("/accounts/reauthenticate/", {"password": factories.PASSWORD})  # allauth asks before changes
    client.get("/accounts/2fa/totp/activate/")  # allauth keeps the new secret in the session
    secret = client.session[SECRET_SESSION_KEY]
    with django_capture_on_commit_callbacks(execute=True):  # allauth signals after its commit
        response = client.post("/accounts/2fa/totp/activate/", {"code": pyotp.TOTP(secret).now()}, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302
    [added] = events("factor_added", person=world.tech, detail__type="totp")
    assert added.detail == {"type": "totp"} and added.address == ADDRESS and added.actor == world.tech
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/accounts/2fa/recovery-codes/generate/", REMOTE_ADDR=ADDRESS)
    [reset] = events("factor_reset", person=world.tech)
    assert reset.detail == {"type": "recovery_codes"}
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/accounts/2fa/totp/deactivate/", REMOTE_ADDR=ADDRESS)
    assert not Authenticator.objects.filter(user=world.tech, type="totp").exists()
    [removed] = events("factor_removed", person=world.tech, detail__type="totp")
    assert removed.detail == {"type": "totp"} and removed.tenant_id == world.tenant.pk


def test_a_wrong_second_factor_code_is_a_failed_sign_in(world):
    client = Client()
    factories.totp(world.tech)
    login(client, world.tech.username)
    client.post("/accounts/2fa/authenticate/", {"code": "000000"}, REMOTE_ADDR=ADDRESS)
    [failed] = events("login_failed", person=world.tech)
    assert failed.detail["step"] == "second factor"
    for _ in range(5):  # allauth's per-account lock counts wrong passwords, not wrong codes
        client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert not events("lockout", person=world.tech)


def test_a_first_sso_sign_in_links_the_account(world):
    sso = people.tenant_sso_configure(
        actor=Party.OPERATOR,
        tenant=world.tenant,
        issuer="https://login.example",
        client_id="id",
        secret="s",
        allowed_domains="msp.example",
        default_role="technician",
    )
    newcomer = factories.member(factories.tenant()).user  # any user row; the join is what is recorded
    Membership.all_tenants.filter(user=newcomer).delete()
    people.membership_join_by_sso(sso=TenantSSO.all_tenants.get(pk=sso.pk), user=newcomer, role="technician")
    [event] = events("sso_linked", person=newcomer)
    assert event.tenant_id == world.tenant.pk and event.target == f"tenant-{world.tenant.slug}"


def test_linking_an_sso_account_later_is_recorded(world, rf):
    sso = people.tenant_sso_configure(
        actor=Party.OPERATOR,
        tenant=world.tenant,
        issuer="https://login.example",
        client_id="i",
        secret="s",
        allowed_domains="msp.example",
        default_role="technician",
    )
    request = rf.post("/accounts/3rdparty/", REMOTE_ADDR=ADDRESS)
    request.user = world.tech
    request.session = SessionStore()
    login = SocialLogin(user=world.tech, account=SocialAccount(provider=sso.app.provider_id, uid="sub-7"))
    login.connect(request, world.tech)  # what allauth's "connect an account" flow calls
    [event] = events("sso_linked", person=world.tech)
    assert event.target == sso.app.provider_id and event.address == ADDRESS and event.actor == world.tech


def test_member_invite_deactivate_and_reactivate_are_recorded(world):
    world.console.post(reverse("members:invite"), {"email": "new@msp.example", "role": "viewer"}, REMOTE_ADDR=ADDRESS)
    [invited] = events("member_invited")
    assert invited.target == "new@msp.example" and invited.detail == {"role": "viewer"} and invited.actor == world.admin
    membership = Membership.all_tenants.get(user=world.tech)
    world.console.post(reverse("members:deactivate", args=[membership.pk]))
    world.console.post(reverse("members:reactivate", args=[membership.pk]))
    assert len(events("member_deactivated", person=world.tech)) == 1
    assert len(events("member_reactivated", person=world.tech)) == 1


def test_security_settings_and_approval_policy_changes_are_recorded(world):
    world.console.post(reverse("members:security"), {"step_up_minutes": "30"}, REMOTE_ADDR=ADDRESS)
    [settings_change] = events("policy_changed")
    assert settings_change.detail["after"] == {"mfa_required": False, "step_up_window_s": 1800}
    # The check that let it through is recorded with it (a tenant-level change has no transcript).
    assert settings_change.detail["step_up"]["method"] in ("sign-in", "password")
    group = factories.client_group(world.tenant)
    ApprovalPolicy.all_tenants.filter(client_group=group).delete()  # new groups come with one now
    response = world.console.post(
        "/admin/endpoints/approvalpolicy/add/",
        {
            "client_group": str(group.pk),
            "requires": "none",
            "response_deadline_s": "300",
            "escalate_after_percent": "50",
        },
    )
    assert response.status_code == 302
    policy_change = SecurityEvent.all_tenants.filter(kind="policy_changed").latest("at")
    assert policy_change.detail["what"] == "added" and policy_change.detail["requires"] == "none"
    assert policy_change.detail["step_up"]["method"] in ("sign-in", "password")
    assert abs(policy_change.detail["step_up"]["at"] - timezone.now().timestamp()) < 600
    assert group.name in policy_change.target


def test_a_policy_change_refused_by_the_step_up_records_nothing(world):
    age_checks(world.console, 3600)
    world.console.post(reverse("members:security"), {"step_up_minutes": "30"})
    assert not events("policy_changed")


def test_a_re_enrollment_is_recorded_with_the_agents_address(world, client):
    group = factories.client_group(world.tenant)
    _, secret = factories.token(group, max_uses=2)
    enroll(client, secret)
    assert not events("endpoint_reenrolled")
    enroll(client, secret, replace=True, REMOTE_ADDR="192.0.2.50")
    [event] = events("endpoint_reenrolled")
    assert event.tenant_id == world.tenant.pk and event.actor_label == "agent" and event.address == "192.0.2.50"


# --- reading: admins only, filters, pages, tenancy -------------------------------------------------------


def test_only_tenant_admins_read_it(world):
    tech = Client()
    tech.force_login(world.tech)
    assert tech.get(reverse("members:security_log")).status_code == 403
    assert world.console.get(reverse("members:security_log")).status_code == 200


def test_filters_by_kind_person_and_dates(world):
    login(Client(), world.tech.username, "wrong-password")
    old = security_event_record(tenant_id=world.tenant.pk, kind=SecurityEventKind.LOGIN, actor=world.tech)
    SecurityEvent.all_tenants.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=10))
    url = reverse("members:security_log")
    by_kind = world.console.get(url + "?kind=login_failed").content.decode()
    assert by_kind.count('data-event="login_failed"') == 1 and 'data-event="login"' not in by_kind
    by_person = world.console.get(url + f"?person={world.tech.pk}").content.decode()
    assert by_person.count("<tr data-event=") == 2 and world.admin.username not in by_person.split("<tbody>")[1]
    day = (timezone.now() - timedelta(days=10)).date().isoformat()
    by_date = world.console.get(url + f"?since={day}&until={day}").content.decode()
    assert by_date.count("<tr data-event=") == 1 and 'data-event="login"' in by_date
    bad = world.console.get(url + "?since=yesterday", follow=True)
    assert "dates are written YYYY-MM-DD" in bad.content.decode()


def test_pages_of_fifty(world):
    for _ in range(60):
        security_event_record(tenant_id=world.tenant.pk, kind=SecurityEventKind.LOGOUT, actor=Party.SYSTEM)
    url = reverse("members:security_log") + "?kind=logout"
    first = world.console.get(url).content.decode()
    assert first.count("<tr data-event=") == 50 and "Page 1 of 2" in first and "kind=logout&amp;page=2" in first
    second = world.console.get(url + "&page=2").content.decode()
    assert second.count("<tr data-event=") == 10


def test_another_tenants_events_are_not_shown(world):
    other = factories.tenant(mfa_required=False)
    other_admin = Membership.all_tenants.get(tenant=other, role=Role.ADMIN).user
    login(Client(), other_admin.username, address="192.0.2.99")
    page = world.console.get(reverse("members:security_log")).content.decode()
    assert "192.0.2.99" not in page and other_admin.username not in page


def test_the_servers_operators_see_tenant_less_failures_in_the_admin(world, settings, django_user_model):
    settings.CAISEY = {**settings.CAISEY, "OPERATOR_MFA_REQUIRED": False}
    login(Client(), "nobody-at-all", "wrong-password")
    operator = django_user_model.objects.create_superuser("op", password=factories.PASSWORD)
    client = Client()
    client.force_login(operator)
    page = client.get("/admin/endpoints/securityevent/").content.decode()
    assert "unknown user &#x27;nobody-at-all&#x27;" in page
    assert world.console.get("/admin/endpoints/securityevent/").status_code in (302, 403)  # a tenant admin: no


def test_the_filtered_log_downloads_as_csv(world):
    login(Client(), world.tech.username, "wrong-password")
    response = world.console.get(reverse("members:security_log_csv") + "?kind=login_failed")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["at", "kind", "actor", "person", "address", "target", "detail"]
    assert [r[1:5] for r in rows[1:]] == [["login_failed", "anonymous", world.tech.username, ADDRESS]]
    tech = Client()
    tech.force_login(world.tech)
    assert tech.get(reverse("members:security_log_csv")).status_code == 403


def test_events_past_the_retention_are_pruned_in_every_tenant(world, settings):
    settings.CAISEY = {**settings.CAISEY, "SECURITY_LOG_DAYS": 30}
    other = factories.tenant(mfa_required=False)
    old = [
        security_event_record(tenant_id=world.tenant.pk, kind=SecurityEventKind.LOGIN, actor=world.tech),
        security_event_record(tenant_id=other.pk, kind=SecurityEventKind.LOGIN, actor=Party.SYSTEM),
        security_event_record(tenant_id=None, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target="x"),
    ]
    SecurityEvent.all_tenants.filter(pk__in=[e.pk for e in old]).update(at=timezone.now() - timedelta(days=31))
    kept = SecurityEvent.all_tenants.count() - 3
    assert security_log_prune() == 3
    assert SecurityEvent.all_tenants.count() == kept > 0
    assert security_log_prune() == 0  # idempotent
