"""Sessions end (idle timeout, absolute lifetime), console sockets close when their person logs
out, is deactivated or changes their password, and tenant admins invite and deactivate members
from the console.

Defect covered: "A console page's socket keeps receiving events after its user logged out;
sessions last 14 days with no idle timeout."
"""

from __future__ import annotations

import re
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from caisey import tenancy
from caisey.errors import Forbidden, Rejected
from endpoints import people
from endpoints.identity import LOGIN_AT, SEEN_AT
from endpoints.models import Membership, Role
from tests import factories
from tests.bridge.test_console_consumer import ConsoleSocket

CLOSE_UNAUTHENTICATED = 4401


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def age_session(client: Client, *, login_ago: float = 0.0, seen_ago: float = 0.0) -> None:
    session = client.session
    now = time.time()
    session[LOGIN_AT] = now - login_ago
    session[SEEN_AT] = now - seen_ago
    session.save()


# --- lifetime ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_session_cookie_lasts_12_hours_not_14_days(client):
    user = factories.member(factories.tenant()).user
    response = client.post("/login/", {"login": user.username, "password": factories.PASSWORD})
    assert response.status_code == 302
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == 12 * 3600


@pytest.mark.django_db
def test_30_minutes_without_a_request_signs_out():
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, seen_ago=29 * 60)
    assert client.get("/").status_code == 200  # still within the idle timeout, and the request counts
    assert time.time() - client.session[SEEN_AT] < 5
    age_session(client, seen_ago=31 * 60)
    response = client.get("/sessions/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=%2Fsessions%2F&expired=idle"
    assert "without activity" in client.get(response["Location"]).content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_a_pages_live_refreshes_do_not_hold_the_idle_timeout_off():
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, seen_ago=29 * 60)
    assert client.get("/", HTTP_X_CAISEY_LIVE="1").status_code == 200  # still signed in
    assert time.time() - client.session[SEEN_AT] > 28 * 60  # but not counted as activity
    age_session(client, seen_ago=31 * 60)
    assert client.get("/", HTTP_X_CAISEY_LIVE="1").status_code == 302


@pytest.mark.django_db
def test_12_hours_after_the_login_signs_out_however_active():
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, login_ago=12 * 3600 + 10, seen_ago=1)
    response = client.get("/")
    assert response.status_code == 302 and "expired=lifetime" in response["Location"]
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_api_with_an_expired_session_is_refused():
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, seen_ago=31 * 60)
    assert client.get("/api/v1/endpoints/").status_code in (401, 403)


@pytest.mark.django_db
def test_both_limits_are_configurable(settings):
    settings.CAISEY = {**settings.CAISEY, "SESSION_IDLE_S": 60.0, "SESSION_ABSOLUTE_S": 600.0}
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, seen_ago=61)
    assert "expired=idle" in client.get("/")["Location"]
    client = signed_in(factories.member(factories.tenant()).user)
    age_session(client, login_ago=601)
    assert "expired=lifetime" in client.get("/")["Location"]


# --- console sockets close ------------------------------------------------------------------------


@pytest.fixture
def person(transactional_db):
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant), hostname="pc-live")
    user = factories.member(tenant, role=Role.TECHNICIAN).user
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    return {"tenant": tenant, "endpoint": endpoint.endpoint, "user": user, "admin": admin}


async def open_socket_for(client: Client) -> ConsoleSocket:
    return await ConsoleSocket(client.cookies[settings.SESSION_COOKIE_NAME].value).open()


async def closed_with(socket: ConsoleSocket, timeout: float = 5) -> int:
    output = await socket.comm.receive_output(timeout=timeout)
    while output["type"] != "websocket.close":
        output = await socket.comm.receive_output(timeout=timeout)
    return output["code"]


@pytest.mark.asyncio
async def test_logging_out_closes_the_pages_socket(person):
    client = await sync_to_async(signed_in)(person["user"])
    socket = await open_socket_for(client)
    await sync_to_async(client.post)("/logout/")
    assert await closed_with(socket) == CLOSE_UNAUTHENTICATED


@pytest.mark.asyncio
async def test_logging_out_elsewhere_leaves_this_sessions_socket_open(person):
    here, there = await sync_to_async(signed_in)(person["user"]), await sync_to_async(signed_in)(person["user"])
    socket_here, socket_there = await open_socket_for(here), await open_socket_for(there)
    await sync_to_async(there.post)("/logout/")
    assert await closed_with(socket_there) == CLOSE_UNAUTHENTICATED
    assert await socket_here.silent_for(1.0)
    assert (await socket_here.subscribe(person["endpoint"].pk))["subscribed"] == "endpoint"
    await socket_here.close()


@pytest.mark.asyncio
async def test_deactivation_closes_the_members_sockets(person):
    client = await sync_to_async(signed_in)(person["user"])
    socket = await open_socket_for(client)

    @sync_to_async
    def deactivate():
        membership = Membership.all_tenants.get(user=person["user"])
        people.membership_deactivate(actor=person["admin"], membership=membership)

    await deactivate()
    assert await closed_with(socket) == CLOSE_UNAUTHENTICATED
    connected, code = await ConsoleSocket(client.cookies[settings.SESSION_COOKIE_NAME].value).connect()
    assert not connected and code == CLOSE_UNAUTHENTICATED


@pytest.mark.asyncio
async def test_a_password_change_closes_the_other_sessions_sockets(person):
    here, there = await sync_to_async(signed_in)(person["user"]), await sync_to_async(signed_in)(person["user"])
    socket_here, socket_there = await open_socket_for(here), await open_socket_for(there)

    @sync_to_async
    def change_password():
        here.post(
            "/accounts/password/change/",
            {
                "oldpassword": factories.PASSWORD,
                "password1": "a-new-long-passphrase",
                "password2": "a-new-long-passphrase",
            },
        )

    await change_password()
    assert await closed_with(socket_there) == CLOSE_UNAUTHENTICATED
    # The page that changed it reloads with its new session key (Django cycles it): that opens.
    assert await closed_with(socket_here) == CLOSE_UNAUTHENTICATED
    await (await open_socket_for(here)).close()
    connected, code = await ConsoleSocket(there.cookies[settings.SESSION_COOKIE_NAME].value).connect()
    assert not connected and code == CLOSE_UNAUTHENTICATED


@pytest.mark.asyncio
async def test_an_idle_session_closes_its_socket_on_the_periodic_check(person, settings):
    settings.CAISEY = {**settings.CAISEY, "CONSOLE_RECHECK_S": 0.2}
    client = await sync_to_async(signed_in)(person["user"])
    socket = await open_socket_for(client)
    assert await socket.silent_for(0.6)  # re-checked a few times: still good
    await sync_to_async(age_session)(client, seen_ago=31 * 60)
    assert await closed_with(socket) == CLOSE_UNAUTHENTICATED


# --- members page: invitations and deactivation --------------------------------------------------


@pytest.fixture
def team(db):
    tenant = factories.tenant(mfa_required=True)
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    factories.totp(admin)
    return {"tenant": tenant, "admin": admin, "client": signed_in(admin)}


def test_an_admin_invites_a_technician_by_email_who_sets_a_password_then_enrols(team):
    client = team["client"]
    page = client.get("/members/")
    assert page.status_code == 200 and team["admin"].username in page.content.decode()
    response = client.post("/members/invite", {"email": "New.Tech@Client.test", "role": "technician"})
    assert response.status_code == 302
    membership = Membership.all_tenants.get(user__username="new.tech@client.test")
    assert membership.tenant == team["tenant"] and membership.role == Role.TECHNICIAN
    assert not membership.user.has_usable_password()
    assert "invited" in client.get("/members/").content.decode()
    [invitation] = mail.outbox
    assert invitation.to == ["new.tech@client.test"] and "requires a second factor" in invitation.body
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", invitation.body).group(1)

    newcomer = Client()
    form_url = newcomer.get(link)["Location"]  # allauth moves the key out of the URL
    response = newcomer.post(form_url, {"password1": "a-long-new-passphrase", "password2": "a-long-new-passphrase"})
    assert response.status_code == 302
    response = newcomer.post("/login/", {"login": "new.tech@client.test", "password": "a-long-new-passphrase"})
    assert response.status_code == 302
    assert newcomer.get("/")["Location"].startswith("/accounts/2fa/")  # enrols before the console


def test_the_invitation_link_works_once(team):
    team["client"].post("/members/invite", {"email": "once@client.test"})
    link = re.search(r"(/accounts/password/reset/key/\S+)", mail.outbox[0].body).group(1)
    first = Client()
    form_url = first.get(link)["Location"]
    first.post(form_url, {"password1": "a-long-new-passphrase", "password2": "a-long-new-passphrase"})
    second = Client()
    response = second.get(link, follow=True)
    assert "Bad Token" in response.content.decode()


def test_a_weak_password_is_refused_on_the_invitation_page(team):
    team["client"].post("/members/invite", {"email": "weak@client.test"})
    link = re.search(r"(/accounts/password/reset/key/\S+)", mail.outbox[0].body).group(1)
    newcomer = Client()
    form_url = newcomer.get(link)["Location"]
    response = newcomer.post(form_url, {"password1": "12345678", "password2": "12345678"})
    assert response.status_code == 200
    assert not get_user_model().objects.get(username="weak@client.test").has_usable_password()


def test_deactivation_from_the_console_signs_the_member_out_and_keeps_them_out(team):
    tech = factories.member(team["tenant"]).user
    factories.totp(tech)
    tech_client = signed_in(tech)
    assert tech_client.get("/").status_code == 200
    membership = Membership.all_tenants.get(user=tech)
    response = team["client"].post(f"/members/{membership.pk}/deactivate")
    assert response.status_code == 302
    assert tech_client.get("/").status_code == 302  # signed out
    refused = Client().post("/login/", {"login": tech.username, "password": factories.PASSWORD})
    assert refused.status_code != 302 or refused["Location"] != "/"
    assert "deactivated" in team["client"].get("/members/").content.decode()
    team["client"].post(f"/members/{membership.pk}/reactivate")
    assert Client().post("/login/", {"login": tech.username, "password": factories.PASSWORD}).status_code == 302


def test_only_admins_manage_members(team):
    tech = factories.member(team["tenant"]).user
    factories.totp(tech)
    client = signed_in(tech)
    assert client.get("/members/").status_code == 403
    assert client.post("/members/invite", {"email": "x@client.test"}).status_code == 403
    with pytest.raises(Forbidden), tenancy.system():
        people.membership_invite(actor=tech, tenant=team["tenant"], email="y@client.test")


def test_an_admin_cannot_touch_another_tenants_members_nor_themselves(team):
    other = factories.member(factories.tenant())
    assert team["client"].post(f"/members/{other.pk}/deactivate").status_code == 404
    assert get_user_model().objects.get(pk=other.user_id).is_active
    own = Membership.all_tenants.get(user=team["admin"])
    with pytest.raises(Rejected, match="yourself"), tenancy.bind(team["tenant"].pk):
        people.membership_deactivate(actor=team["admin"], membership=own)


def test_an_invitation_to_a_taken_address_changes_nothing(team):
    team["client"].post("/members/invite", {"email": "dup@client.test"})
    response = team["client"].post("/members/invite", {"email": "DUP@client.test"}, follow=True)
    assert "already has an account" in response.content.decode()
    assert Membership.all_tenants.filter(user__username="dup@client.test").count() == 1
    assert len(mail.outbox) == 1


def test_changing_the_security_settings_needs_a_recent_second_factor(team):
    # force_login made no second-factor check: the change asks for one first.
    response = team["client"].post(
        "/members/security", {"step_up_minutes": "5"}, HTTP_REFERER="http://testserver/members/"
    )
    assert response["Location"].startswith("/accounts/2fa/reauthenticate/")
    team["tenant"].refresh_from_db()
    assert team["tenant"].mfa_required and team["tenant"].step_up_window_s == 900


def test_security_settings_are_checked_and_saved(team, settings):
    import pyotp
    from allauth.mfa.utils import decrypt

    secret = decrypt(team["admin"].authenticator_set.get().data["secret"])
    client = Client()
    client.post("/login/", {"login": team["admin"].username, "password": factories.PASSWORD})
    client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    response = client.post("/members/security", {"step_up_minutes": "0"}, follow=True)
    assert "between 1 minute and 12 hours" in response.content.decode()
    response = client.post("/members/security", {"step_up_minutes": "5"})  # the checkbox left out: off
    assert response.status_code == 302 and response["Location"] == "/members/"
    team["tenant"].refresh_from_db()
    assert not team["tenant"].mfa_required and team["tenant"].step_up_window_s == 300
    tech = factories.member(team["tenant"]).user
    with pytest.raises(Forbidden), tenancy.system():
        people.tenant_security_update(
            actor=tech, tenant=team["tenant"], mfa_required=False, step_up_window_s=600, step_up=None
        )
