"""Step-up: shell commands, service restarts, bulk runs, share links and approval-policy changes
need a recent check (a second factor for people who have one, within the tenant's window, 15
minutes by default); the session's transcript records the check."""

from __future__ import annotations

import time

import pyotp
import pytest
from allauth.account.authentication import AUTHENTICATION_METHODS_SESSION_KEY
from django.test import Client
from django.urls import reverse

from caisey import tenancy
from endpoints.access import LOGIN_AT, StepUp
from endpoints.models import ApprovalPolicy, Membership, Role, Tenant
from sessions_app.kinds import TranscriptKind
from sessions_app.models import Action, Batch, BulkRun, ShareLink, SupportSession, TranscriptEntry
from sessions_app.services import actions, step_up
from tests import factories

pytestmark = pytest.mark.django_db

SHELL = {"kind": "shell", "shell__command": "whoami"}


@pytest.fixture(autouse=True)
def _codes_of_the_neighbouring_periods_count(settings):
    # allauth refuses a code twice; accepting the previous and next period's codes (as many
    # deployments do for clock skew) gives each check of a test a fresh code without waiting.
    settings.MFA_TOTP_TOLERANCE = 1


def fresh_code(secret: str, used: set[str]) -> str:
    totp, now = pyotp.TOTP(secret), time.time()
    code = next(c for c in (totp.at(now), totp.at(now - 30), totp.at(now + 30)) if c not in used)
    used.add(code)
    return code


def age_checks(client: Client, seconds: float) -> None:
    """Make every check this session made (sign-in, second factor, password) ``seconds`` older."""
    session = client.session
    session[AUTHENTICATION_METHODS_SESSION_KEY] = [
        {**r, "at": r["at"] - seconds} for r in session.get(AUTHENTICATION_METHODS_SESSION_KEY, [])
    ]
    session[LOGIN_AT] = session[LOGIN_AT] - seconds
    session.save()


@pytest.fixture
def world():
    """A tenant requiring a second factor; a technician with an authenticator app, signed in
    through the real login (password, then a code), in an open session on an endpoint."""
    tenant = factories.tenant(mfa_required=True)
    group = factories.client_group(tenant)
    endpoint = factories.endpoint(group, hostname="pc-risky").endpoint
    tech = factories.member(tenant, role=Role.TECHNICIAN).user
    secret = factories.totp(tech)
    used: set[str] = set()
    client = Client()
    client.post("/login/", {"login": tech.username, "password": factories.PASSWORD})
    assert client.post("/accounts/2fa/authenticate/", {"code": fresh_code(secret, used)})["Location"] == "/"
    session = factories.support_session(endpoint, opened_by=tech)
    return {
        "tenant": tenant,
        "group": group,
        "endpoint": endpoint,
        "tech": tech,
        "client": client,
        "secret": secret,
        "used": used,
        "session": session,
    }


def run(world, data):
    return world["client"].post(
        reverse("console:action_run", args=[world["session"].pk]), data, HTTP_REFERER="http://testserver/back/"
    )


def step_ups(session) -> list[TranscriptEntry]:
    return list(TranscriptEntry.all_tenants.filter(session=session, kind=TranscriptKind.IDENTITY_STEP_UP))


def test_a_shell_command_right_after_a_second_factor_sign_in_runs_and_the_transcript_says_why(world):
    run(world, SHELL)
    action = Action.all_tenants.get(session=world["session"], kind="shell")
    [entry] = step_ups(world["session"])
    assert entry.data["method"] == "mfa" and entry.data["for"] == "shell"
    assert abs(entry.data["at"] - time.time()) < 60
    assert entry.index < TranscriptEntry.all_tenants.get(action=action, kind=TranscriptKind.ACTION_QUEUED).index


def test_after_the_window_a_shell_command_asks_for_the_second_factor_again(world):
    age_checks(world["client"], 16 * 60)
    response = run(world, SHELL)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/2fa/reauthenticate/?next=http%3A%2F%2Ftestserver%2Fback%2F"
    assert not Action.all_tenants.filter(session=world["session"]).exists() and not step_ups(world["session"])
    # The password alone does not do: the person has a second factor.
    response = world["client"].post(
        "/accounts/2fa/reauthenticate/", {"code": fresh_code(world["secret"], world["used"])}
    )
    assert response.status_code == 302
    run(world, SHELL)
    assert Action.all_tenants.filter(session=world["session"], kind="shell").count() == 1
    assert step_ups(world["session"])[0].data["method"] == "mfa"


def test_a_service_restart_needs_it_too_but_a_diagnostic_does_not(world):
    age_checks(world["client"], 16 * 60)
    assert run(world, {"kind": "service_restart", "service_restart__service": "spooler"}).status_code == 302
    assert not Action.all_tenants.filter(session=world["session"]).exists()
    run(world, {"kind": "system_summary"})
    assert Action.all_tenants.filter(session=world["session"], kind="system_summary").count() == 1
    assert not step_ups(world["session"])


def test_the_window_is_per_tenant(world):
    Tenant.all_tenants.filter(pk=world["tenant"].pk).update(step_up_window_s=60)
    age_checks(world["client"], 61)
    assert run(world, SHELL).status_code == 302
    assert not Action.all_tenants.filter(session=world["session"]).exists()


def test_without_a_second_factor_a_recent_sign_in_or_password_does():
    tenant = factories.tenant(mfa_required=False)
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    tech = factories.member(tenant).user
    client = Client()
    client.post("/login/", {"login": tech.username, "password": factories.PASSWORD})
    session = factories.support_session(endpoint, opened_by=tech)
    url = reverse("console:action_run", args=[session.pk])
    client.post(url, SHELL)
    assert step_ups(session)[0].data["method"] in ("password", "sign-in")
    age_checks(client, 16 * 60)
    response = client.post(url, {"kind": "shell", "shell__command": "hostname"}, HTTP_REFERER="http://testserver/x/")
    assert response["Location"].startswith("/accounts/reauthenticate/?next=")
    assert client.post("/accounts/reauthenticate/", {"password": factories.PASSWORD}).status_code == 302
    client.post(url, {"kind": "shell", "shell__command": "hostname"})
    assert Action.all_tenants.filter(session=session, kind="shell").count() == 2
    assert [e.data["method"] for e in step_ups(session)][-1] == "password"


def test_a_share_link_needs_it(world):
    factories.mark_reviewed(world["tech"], world["session"])  # the review gate (issue 10) is not under test
    age_checks(world["client"], 16 * 60)
    url = reverse("console:session_share", args=[world["session"].pk])
    assert world["client"].post(url, {"expires_days": "3", "label": "Dana"}).status_code == 302
    assert not ShareLink.all_tenants.exists()
    world["client"].post("/accounts/2fa/reauthenticate/", {"code": fresh_code(world["secret"], world["used"])})
    assert world["client"].post(url, {"expires_days": "3", "label": "Dana"}).status_code == 200
    assert ShareLink.all_tenants.count() == 1
    assert step_ups(world["session"])[-1].data["for"] == "share link"


def test_a_bulk_run_needs_it(world):
    age_checks(world["client"], 16 * 60)
    response = world["client"].post(
        reverse("console:bulk_start"),
        {"kind": "system_summary", "group": world["group"].slug, "reason": "patch tuesday"},
    )
    assert response.status_code == 302 and response["Location"].startswith("/accounts/2fa/reauthenticate/")
    assert not BulkRun.all_tenants.exists()


def test_a_rerun_of_a_bulk_runs_failures_needs_it(world):
    from sessions_app.models import Action, ActionStatus

    first = factories.bulk_run([world["endpoint"]], actor=world["tech"])
    Action.all_tenants.filter(bulk_run=first).update(status=ActionStatus.FAILED)
    age_checks(world["client"], 16 * 60)
    response = world["client"].post(reverse("console:bulk_rerun", args=[first.pk]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/2fa/reauthenticate/")
    assert BulkRun.all_tenants.count() == 1


def test_a_runbook_across_a_client_group_needs_it_and_a_risky_step_on_one_endpoint_too(world):
    from sessions_app.models import Batch

    safe = factories.runbook(world["tenant"], actor=world["tech"], name="safe")
    risky = factories.runbook(
        world["tenant"], actor=world["tech"], name="risky", steps=[{"kind": "shell", "params": {"command": "whoami"}}]
    )
    age_checks(world["client"], 16 * 60)
    client = world["client"]
    response = client.post(
        reverse("console:runbook_run", args=[safe.runbook_id]), {"version": "1", "group": world["group"].slug}
    )
    assert response["Location"].startswith("/accounts/2fa/reauthenticate/")
    response = client.post(
        reverse("console:runbook_run", args=[risky.runbook_id]), {"version": "1", "endpoint": str(world["endpoint"].pk)}
    )
    assert response["Location"].startswith("/accounts/2fa/reauthenticate/")
    assert not BulkRun.all_tenants.exists() and not Batch.all_tenants.exists()
    # A runbook of diagnostics only runs on one endpoint without it, as a diagnostic does.
    response = client.post(
        reverse("console:runbook_run", args=[safe.runbook_id]), {"version": "1", "endpoint": str(world["endpoint"].pk)}
    )
    assert response["Location"].startswith("/sessions/") and Batch.all_tenants.count() == 1


def test_an_approval_policy_change_in_the_admin_needs_it():
    tenant = factories.tenant(mfa_required=True)
    group = factories.client_group(tenant)
    ApprovalPolicy.all_tenants.filter(client_group=group).delete()  # new groups come with one now
    admin = Membership.all_tenants.get(tenant=tenant, role=Role.ADMIN).user
    secret = factories.totp(admin)
    client = Client()
    client.post("/login/", {"login": admin.username, "password": factories.PASSWORD})
    client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    age_checks(client, 16 * 60)
    response = client.post(
        "/admin/endpoints/approvalpolicy/add/",
        {
            "client_group": str(group.pk),
            "requires": "none",
            "response_deadline_s": "300",
            "escalate_after_percent": "50",
        },
    )
    assert response.status_code == 302 and response["Location"].startswith("/accounts/2fa/reauthenticate/")
    with tenancy.system():
        assert not ApprovalPolicy.objects.filter(client_group=group, requires="none").exists()


# --- one service, the check an argument of it (no *_stepped_up twins) ------------------------------


def test_the_check_is_an_argument_of_the_one_service_and_lands_in_the_transcript(world):
    assert not hasattr(step_up, "action_request_stepped_up") and not hasattr(step_up, "share_link_create_stepped_up")
    checked = StepUp(method="mfa", at=time.time() - 5)
    action = actions.action_request(
        actor=world["tech"], session=world["session"], kind="shell", params={"command": "id"}, step_up=checked
    )
    [entry] = step_ups(world["session"])
    assert entry.data == {"method": "mfa", "at": round(checked.at, 3), "for": "shell"}
    queued = TranscriptEntry.all_tenants.get(action=action, kind=TranscriptKind.ACTION_QUEUED)
    assert entry.index == queued.index - 1
    # Without one (the API, the command line) nothing is recorded: the view is what asks for it.
    actions.action_request(actor=world["tech"], session=world["session"], kind="shell", params={"command": "id"})
    assert len(step_ups(world["session"])) == 1


def test_a_batch_with_a_shell_command_needs_it_and_records_it_once(world):
    url = reverse("console:batch_run", args=[world["session"].pk])
    age_checks(world["client"], 16 * 60)
    response = world["client"].post(url, {"steps": "system_summary\nshell command=whoami"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/2fa/reauthenticate/")
    assert not Batch.all_tenants.exists() and not Action.all_tenants.filter(session=world["session"]).exists()
    world["client"].post("/accounts/2fa/reauthenticate/", {"code": fresh_code(world["secret"], world["used"])})
    world["client"].post(url, {"steps": "system_summary\nshell command=whoami"})
    assert Batch.all_tenants.count() == 1
    [entry] = step_ups(world["session"])
    assert entry.data["for"] == "batch" and entry.data["method"] == "mfa"
    # A batch of diagnostics alone needs no check and records none.
    age_checks(world["client"], 16 * 60)
    world["client"].post(url, {"steps": "system_summary\ndisk_usage"})
    assert Batch.all_tenants.count() == 2 and len(step_ups(world["session"])) == 1


def test_a_bulk_run_records_the_check_in_every_sessions_transcript(world):
    second = factories.endpoint(world["group"], hostname="pc-two").endpoint
    response = world["client"].post(
        reverse("console:bulk_start"),
        {"kind": "system_summary", "group": world["group"].slug, "reason": "patch tuesday"},
    )
    assert response.status_code == 302
    run = BulkRun.all_tenants.get()
    sessions = list(SupportSession.all_tenants.filter(actions__bulk_run=run).distinct())
    assert {s.endpoint_id for s in sessions} == {world["endpoint"].pk, second.pk}
    for session in sessions:
        [entry] = step_ups(session)
        assert entry.data["for"] == "bulk run" and entry.data["method"] == "mfa"
        kinds = list(
            TranscriptEntry.all_tenants.filter(session=session).order_by("index").values_list("kind", flat=True)
        )
        assert kinds[:3] == [
            TranscriptKind.SESSION_OPENED,
            TranscriptKind.IDENTITY_STEP_UP,
            TranscriptKind.ACTION_QUEUED,
        ]


def test_an_incident_share_link_records_the_check_in_each_of_its_sessions(world):
    other = factories.support_session(world["endpoint"], opened_by=world["tech"])
    incident = factories.incident(world["tenant"], actor=world["tech"], sessions=[world["session"], other])
    factories.mark_reviewed(world["tech"], world["session"], other)
    url = reverse("console:incident_share", args=[incident.pk])
    age_checks(world["client"], 16 * 60)
    assert world["client"].post(url, {"expires_days": "3", "label": "Dana"}).status_code == 302
    assert not ShareLink.all_tenants.exists() and not step_ups(world["session"])
    world["client"].post("/accounts/2fa/reauthenticate/", {"code": fresh_code(world["secret"], world["used"])})
    assert world["client"].post(url, {"expires_days": "3", "label": "Dana"}).status_code == 200
    assert ShareLink.all_tenants.get().incident_id == incident.pk
    for s in (world["session"], other):
        [entry] = step_ups(s)
        assert entry.data["for"] == "share link" and entry.data["method"] == "mfa"


# --- the REST API: a browser session is held to the console's rule -------------------------------


def api_shell(world):
    return world["client"].post(
        f"/api/v1/sessions/{world['session'].pk}/actions/",
        {"kind": "shell", "params": {"command": "whoami"}},
        content_type="application/json",
    )


def test_a_session_past_its_window_cannot_run_a_shell_command_through_the_api(world):
    """Was: the API called the services without a check, so a signed-in browser session past its
    step-up window ran through /api/v1/ the shell command the console refused."""
    age_checks(world["client"], 16 * 60)
    response = api_shell(world)
    assert response.status_code == 403, response.content
    assert "recent check that it is you" in response.json()["detail"]
    assert not Action.all_tenants.filter(session=world["session"]).exists() and not step_ups(world["session"])
    bulk = world["client"].post(
        "/api/v1/bulk-runs/",
        {"endpoints": [str(world["endpoint"].pk)], "kind": "disk_usage", "params": {}, "reason": "T-1"},
        content_type="application/json",
    )
    assert bulk.status_code == 403 and not BulkRun.all_tenants.exists()
    share = world["client"].post(
        f"/api/v1/sessions/{world['session'].pk}/share-links/", {}, content_type="application/json"
    )
    assert share.status_code == 403 and not ShareLink.all_tenants.exists()


def test_a_session_within_its_window_runs_it_through_the_api_and_the_transcript_says_so(world):
    response = api_shell(world)
    assert response.status_code == 201, response.content
    [entry] = step_ups(world["session"])
    assert entry.data["method"] == "mfa" and entry.data["for"] == "shell"


def test_an_api_token_needs_no_step_up_of_its_own(world):
    """A token was issued under a step-up, carries a scope and can be revoked: scripts use it."""
    from rest_framework.test import APIClient

    _, token = factories.api_token(world["tech"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api.post(
        f"/api/v1/sessions/{world['session'].pk}/actions/",
        {"kind": "shell", "params": {"command": "whoami"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert not step_ups(world["session"])
