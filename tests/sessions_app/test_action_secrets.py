"""Secret action parameters (a password for an authenticated LDAP bind): entered once, sealed beside the
action, opened only into the action.run frame, wiped when the action is final; shown everywhere as the
mask. The assertions are on what is actually rendered: the API's answers, the console's pages, the
transcript, the JSON export, the share page, the outbox row and the frame."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bridge import outbox
from bridge.models import OutboxMessage
from caisey import secretbox, tenancy
from caisey_agent import protocol as p
from sessions_app.models import Action, ActionStatus, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services import bulk, runbooks, sharing
from sessions_app.services.sessions import SessionError
from tests import factories

pytestmark = pytest.mark.django_db

SECRET = "Tr0ub4dor&3-unique-bind-pw"
PARAMS = {"host": "dc01.corp.example", "tls": True, "bind_dn": "CORP\\svc-check", "password": SECRET}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant("Acme IT")
        self.group = factories.client_group(self.tenant, name="Dental Practice")
        factories.policy(self.group, requires="none")
        self.endpoint = factories.endpoint(self.group, hostname="dc01").endpoint
        self.tech = factories.technician(self.tenant)
        self.session = factories.support_session(self.endpoint, opened_by=self.tech, reason="logon fails")
        self.api = APIClient()
        _, token = factories.api_token(self.tech)
        self.api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    def request(self, params=None) -> dict:
        response = self.api.post(
            f"/api/v1/sessions/{self.session.pk}/actions/",
            {"kind": "ldap_check", "params": params or PARAMS},
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()

    def transcript(self) -> str:
        entries = TranscriptEntry.all_tenants.filter(session=self.session).values("kind", "data")
        return json.dumps(list(entries), ensure_ascii=False)

    def finish(self, action_id: str) -> None:
        services.action_result_receive(
            endpoint=self.endpoint,
            body=p.ActionResult(
                action_id, "succeeded", exit_code=0, result={"text": "bind as CORP\\svc-check: success", "data": {}}
            ),
        )


@pytest.fixture
def world():
    return World()


def outbox_row(action: Action) -> OutboxMessage:
    return OutboxMessage.all_tenants.get(pk=action.outbox_id)


def test_the_password_reaches_only_the_frame_and_is_wiped_when_the_action_is_final(client, world):
    created = world.request()
    assert created["params"]["password"] == p.SECRET_MASK and SECRET not in json.dumps(created)
    action = Action.all_tenants.get(pk=created["id"])

    # At rest: masked in the action's params, sealed beside it, sealed in the outbox row.
    assert action.params == {**PARAMS, "password": p.SECRET_MASK}
    assert set(action.secrets) == {"password"} and SECRET not in json.dumps(action.secrets)
    assert secretbox.unseal(action.secrets["password"], purpose=secretbox.ACTION_SECRETS) == SECRET
    row = outbox_row(action)
    assert SECRET not in json.dumps(row.body)
    # The frame the bridge writes to the agent's websocket: the one place it is in clear.
    frame = p.decode(outbox.frame_of(row), accept=p.SERVER_TO_AGENT)
    assert frame.body.params["password"] == SECRET and frame.body.params["bind_dn"] == "CORP\\svc-check"

    # Shown: the mask, never the password (transcript, API read-backs, console page).
    assert SECRET not in world.transcript() and p.SECRET_MASK in world.transcript()
    read = world.api.get(f"/api/v1/actions/{action.pk}/")
    assert read.status_code == 200 and SECRET not in read.content.decode()
    assert read.json()["params"]["password"] == p.SECRET_MASK
    listed = world.api.get(f"/api/v1/sessions/{world.session.pk}/actions/").content.decode()
    assert SECRET not in listed and str(action.pk) in listed
    client.force_login(world.tech)
    page = client.get(reverse("console:session_detail", args=[world.session.pk]))
    assert page.status_code == 200
    assert SECRET not in page.content.decode() and f"password={p.SECRET_MASK}" in page.content.decode()

    world.finish(str(action.pk))
    action.refresh_from_db()
    assert action.status == ActionStatus.SUCCEEDED and action.secrets == {}
    row.refresh_from_db()
    assert row.body["params"]["password"] == p.SECRET_MASK  # no sealed copy left anywhere
    assert p.decode(outbox.frame_of(row), accept=p.SERVER_TO_AGENT).body.params["password"] == p.SECRET_MASK

    # The record as shared and exported.
    factories.mark_reviewed(world.tech, world.session)
    with tenancy.bind(world.tenant.pk):
        link, token = sharing.share_link_create(actor=world.tech, session=world.session, expires_in=timedelta(days=1))
    export = client.get(reverse("console:share_link_export", args=[link.pk]))
    assert export.status_code == 200 and SECRET not in export.content.decode()
    assert p.SECRET_MASK in export.content.decode()
    client.logout()
    shared = client.get(reverse("share_view", args=[token]))
    assert shared.status_code == 200 and SECRET not in shared.content.decode()


def test_a_cancelled_action_wipes_its_password_too(world):
    action = Action.all_tenants.get(pk=world.request()["id"])
    cancelled = world.api.post(f"/api/v1/actions/{action.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    action.refresh_from_db()
    assert action.secrets == {} and outbox_row(action).body["params"]["password"] == p.SECRET_MASK


def test_a_password_is_not_kept_in_a_runbook_or_a_bulk_run(world):
    with pytest.raises(SessionError, match="password is a secret"):
        with tenancy.bind(world.tenant.pk):
            runbooks.runbook_create(
                actor=world.tech, tenant_id=world.tenant.pk, name="AD", steps=[{"kind": "ldap_check", "params": PARAMS}]
            )
    with pytest.raises(SessionError, match="password is a secret"):
        bulk.bulk_run_start(actor=world.tech, endpoints=[world.endpoint], kind="ldap_check", params=PARAMS, reason="x")


@pytest.mark.parametrize(
    "params, why",
    [
        ({"host": "dc01", "tls": True, "bind_dn": "CORP\\svc"}, "bind_dn and password go together"),
        ({"host": "dc01", "tls": True, "password": SECRET}, "bind_dn and password go together"),
        ({**PARAMS, "password": SECRET + "\x1b[8m"}, "password contains a control character"),
    ],
)
def test_bad_credentials_are_refused_before_anything_is_kept(world, params, why):
    before = (Action.all_tenants.count(), OutboxMessage.all_tenants.count(), TranscriptEntry.all_tenants.count())
    response = world.api.post(
        f"/api/v1/sessions/{world.session.pk}/actions/", {"kind": "ldap_check", "params": params}, format="json"
    )
    assert response.status_code == 400 and why in response.json()["detail"]
    assert SECRET not in response.content.decode()
    after = (Action.all_tenants.count(), OutboxMessage.all_tenants.count(), TranscriptEntry.all_tenants.count())
    assert after == before


def test_the_catalogue_tells_the_console_it_is_a_secret(world):
    body = world.api.get("/api/v1/catalogue/").json()
    kinds = body if isinstance(body, list) else body.get("kinds", body.get("results", []))
    ldap = next(k for k in kinds if k["name"] == "ldap_check")
    assert {p_["name"]: p_["type"] for p_ in ldap["params"]}["password"] == "secret"
