"""The REST API of approval prompts and incidents: each operation's happy path, another tenant's
id (404), a viewer (403) and bad input (400, nothing changed)."""

from __future__ import annotations

import pytest
from django.core import mail

from endpoints.models import ClientGroup, Tenant
from sessions_app.models import Incident, IncidentSession, Prompt, PromptState, SupportSession, TranscriptEntry
from tests import factories
from tests.api.test_api import V1, World, assert_error, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world() -> World:
    return World()


def rows() -> tuple:
    """Everything these operations may write, to show a refused request wrote nothing."""
    return (
        sorted(Prompt.all_tenants.values_list("pk", "state")),
        sorted(Incident.all_tenants.values_list("pk", "status", "ticket", "title")),
        IncidentSession.all_tenants.count(),
        TranscriptEntry.all_tenants.count(),
        sorted(SupportSession.all_tenants.values_list("pk", "ticket")),
    )


def prompt_in(world: World, session_id=None) -> Prompt:
    session = SupportSession.all_tenants.get(pk=session_id or world.open_session()["id"])
    return factories.prompt(session, actor=world.tech)


def kinds(session_id) -> list[str]:
    return list(
        TranscriptEntry.all_tenants.filter(session_id=session_id).order_by("index").values_list("kind", flat=True)
    )


# --- prompts -------------------------------------------------------------------------------------------


def test_list_and_filter_prompts(world):
    first = prompt_in(world)
    second = prompt_in(world)
    rival = factories.prompt(world.rival_session, actor=world.rival_tech)
    listed = world.api.get(f"{V1}/prompts/").json()
    assert {p["id"] for p in listed["results"]} == {str(first.pk), str(second.pk)}
    assert str(rival.pk) not in str(listed)
    only = world.api.get(f"{V1}/prompts/", {"session": str(first.session_id)}).json()["results"]
    assert [p["id"] for p in only] == [str(first.pk)]
    # app01 is offline: the prompt could not be delivered at once (it stays open: resend, escalate, cancel)
    assert (
        only[0]["state"] == "failed_to_deliver"
        and only[0]["open"] is True
        and only[0]["endpoint"]["hostname"] == "app01"
    )
    assert world.api.get(f"{V1}/prompts/", {"state": "open"}).json()["count"] == 2
    assert world.api.get(f"{V1}/prompts/", {"state": "approved"}).json()["count"] == 0
    one = world.api.get(f"{V1}/prompts/{first.pk}/").json()
    assert one["title"] == first.title and one["session"] == str(first.session_id)


@pytest.mark.parametrize("query", [{"state": "bogus"}, {"session": "not-a-uuid"}])
def test_a_bad_prompt_filter_is_400(world, query):
    assert_error(world.api.get(f"{V1}/prompts/", query), 400, "invalid_request")


def test_cancel_a_prompt(world):
    prompt = prompt_in(world)
    response = world.api.post(f"{V1}/prompts/{prompt.pk}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled"
    assert "prompt.cancelled" in kinds(prompt.session_id)
    before = rows()
    body = assert_error(world.api.post(f"{V1}/prompts/{prompt.pk}/cancel/"), 400, "rejected")
    assert "already cancelled" in body["detail"]
    assert rows() == before


def test_reissue_a_prompt(world):
    prompt = prompt_in(world)
    response = world.api.post(f"{V1}/prompts/{prompt.pk}/reissue/")
    assert response.status_code == 201, response.content
    fresh = response.json()
    assert fresh["id"] != str(prompt.pk) and fresh["open"] and fresh["title"] == prompt.title
    old = world.api.get(f"{V1}/prompts/{prompt.pk}/").json()
    assert old["state"] == "superseded" and old["superseded_by"] == fresh["id"]


def test_resend_a_prompt_that_could_not_be_delivered(world):
    prompt = prompt_in(world)
    assert Prompt.all_tenants.get(pk=prompt.pk).state == PromptState.FAILED_TO_DELIVER  # app01 is offline
    Prompt.all_tenants.filter(pk=prompt.pk).update(state=PromptState.DELIVERED)
    before = rows()
    body = assert_error(world.api.post(f"{V1}/prompts/{prompt.pk}/resend/"), 400, "rejected")
    assert "could not be delivered" in body["detail"]
    assert rows() == before
    Prompt.all_tenants.filter(pk=prompt.pk).update(state=PromptState.FAILED_TO_DELIVER)
    response = world.api.post(f"{V1}/prompts/{prompt.pk}/resend/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "pending"


def test_escalate_a_prompt_to_the_designated_approver(world, django_capture_on_commit_callbacks):
    ClientGroup.all_tenants.filter(pk=world.group.pk).update(approver_email="boss@dental.test")
    factories.policy(world.group, allow_without_user=True)  # nobody is logged in at app01
    prompt = prompt_in(world)
    with django_capture_on_commit_callbacks(execute=True):  # the email goes on commit
        response = world.api.post(f"{V1}/prompts/{prompt.pk}/escalate/")
    assert response.status_code == 200, response.content
    assert response.json()["escalated_at"] is not None
    assert "prompt.escalated" in kinds(prompt.session_id)
    assert [m.to for m in mail.outbox] == [["boss@dental.test"]]


def test_escalation_the_policy_does_not_allow_yet_is_400_and_sends_nothing(world):
    ClientGroup.all_tenants.filter(pk=world.group.pk).update(approver_email="boss@dental.test")
    prompt = prompt_in(world)  # nobody logged in, and the default policy wants a user there
    before = rows()
    body = assert_error(world.api.post(f"{V1}/prompts/{prompt.pk}/escalate/"), 400, "rejected")
    assert "nobody is logged in" in body["detail"]
    assert world.api.get(f"{V1}/prompts/{prompt.pk}/").json()["escalation_blocked"]
    assert rows() == before and not mail.outbox


def test_run_approved_without_a_late_approval_is_400(world):
    prompt = prompt_in(world)
    before = rows()
    assert_error(world.api.post(f"{V1}/prompts/{prompt.pk}/run-approved/"), 400)
    assert rows() == before


@pytest.mark.parametrize("move", ["cancel", "reissue", "resend", "escalate", "run-approved"])
def test_another_tenants_prompt_is_not_found(world, move):
    rival = factories.prompt(world.rival_session, actor=world.rival_tech)
    before = rows()
    assert_error(world.api.get(f"{V1}/prompts/{rival.pk}/"), 404, "not_found")
    assert_error(world.api.post(f"{V1}/prompts/{rival.pk}/{move}/"), 404, "not_found")
    assert rows() == before


@pytest.mark.parametrize("move", ["cancel", "reissue", "resend", "escalate", "run-approved"])
def test_a_viewer_reads_prompts_but_cannot_move_them(world, move):
    prompt = prompt_in(world)
    viewer = client_for(world.viewer)
    assert viewer.get(f"{V1}/prompts/").status_code == 200
    assert viewer.get(f"{V1}/prompts/{prompt.pk}/").status_code == 200
    before = rows()
    assert_error(viewer.post(f"{V1}/prompts/{prompt.pk}/{move}/"), 403, "forbidden")
    assert rows() == before


# --- incidents -----------------------------------------------------------------------------------------


def create_incident(world: World, **body) -> dict:
    response = world.api.post(f"{V1}/incidents/", {"title": "ERP down", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_list_and_retrieve_incidents(world):
    Tenant.all_tenants.filter(pk=world.tenant.pk).update(
        ticket_url_template="https://acme.halopsa.com/ticket?id={ticket}"
    )
    created = create_incident(world, client_group=str(world.group.pk), ticket="48213")
    assert created["status"] == "open" and created["client_group"] == str(world.group.pk)
    assert created["ticket"] == {"ticket": "48213", "url": "https://acme.halopsa.com/ticket?id=48213"}
    assert created["next_statuses"] == ["resolved", "closed"] and created["sessions"] == []
    factories.incident(world.rival, actor=world.rival_tech, title="Rival outage")
    listed = world.api.get(f"{V1}/incidents/").json()
    assert [i["id"] for i in listed["results"]] == [created["id"]]
    assert world.api.get(f"{V1}/incidents/", {"status": "closed"}).json()["count"] == 0
    assert world.api.get(f"{V1}/incidents/{created['id']}/").json()["title"] == "ERP down"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "x" * 201},
        {"title": "ok", "ticket": "T-1\n2"},
        {"title": "ok", "ticket": "T\u202e1"},
        {"title": "ok", "ticket": "x" * 65},
        {"title": "ok", "client_group": "not-a-uuid"},
        {"title": "ok", "client_group": "00000000-0000-4000-8000-000000000000"},
    ],
)
def test_bad_incident_bodies_are_400_and_create_nothing(world, body):
    before = rows()
    assert_error(world.api.post(f"{V1}/incidents/", body, format="json"), 400)
    assert rows() == before


def test_another_tenants_client_group_cannot_be_named(world):
    before = rows()
    body = {"title": "ok", "client_group": str(world.rival_group.pk)}
    assert_error(world.api.post(f"{V1}/incidents/", body, format="json"), 400, "invalid_request")
    assert rows() == before


def test_add_and_remove_sessions(world):
    incident = create_incident(world)
    sid = world.open_session()["id"]
    response = world.api.post(f"{V1}/incidents/{incident['id']}/sessions/", {"session": sid}, format="json")
    assert response.status_code == 200, response.content
    assert [s["id"] for s in response.json()["sessions"]] == [sid]
    assert "session.added_to_incident" in kinds(sid)
    before = rows()
    again = world.api.post(f"{V1}/incidents/{incident['id']}/sessions/", {"session": sid}, format="json")
    assert "already part" in assert_error(again, 400, "rejected")["detail"]
    assert rows() == before
    response = world.api.post(f"{V1}/incidents/{incident['id']}/sessions/remove/", {"session": sid}, format="json")
    assert response.status_code == 200 and response.json()["sessions"] == []
    assert kinds(sid)[-1] == "session.removed_from_incident"
    before = rows()
    gone = world.api.post(f"{V1}/incidents/{incident['id']}/sessions/remove/", {"session": sid}, format="json")
    assert "not part" in assert_error(gone, 400, "rejected")["detail"]
    assert rows() == before


@pytest.mark.parametrize("path", ["sessions/", "sessions/remove/"])
@pytest.mark.parametrize("body", [{}, {"session": "nope"}, "rival", "unknown"])
def test_bad_session_bodies_are_400_and_change_nothing(world, path, body):
    incident = create_incident(world)
    if body == "rival":
        body = {"session": str(world.rival_session.pk)}
    elif body == "unknown":
        body = {"session": "00000000-0000-4000-8000-000000000000"}
    before = rows()
    assert_error(world.api.post(f"{V1}/incidents/{incident['id']}/{path}", body, format="json"), 400)
    assert rows() == before


def test_status_moves_and_a_refused_move_is_a_conflict(world):
    incident = create_incident(world)
    url = f"{V1}/incidents/{incident['id']}/status/"
    resolved = world.api.post(url, {"status": "resolved"}, format="json")
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_at"] is not None
    closed = world.api.post(url, {"status": "closed"}, format="json").json()
    assert closed["status"] == "closed" and closed["next_statuses"] == []
    before = rows()
    assert_error(world.api.post(url, {"status": "open"}, format="json"), 409, "conflict")
    assert_error(world.api.post(url, {"status": "bogus"}, format="json"), 400, "invalid_request")
    assert rows() == before


def test_set_and_clear_an_incidents_ticket(world):
    incident = create_incident(world)
    url = f"{V1}/incidents/{incident['id']}/ticket/"
    response = world.api.post(url, {"ticket": "T20240101.0001"}, format="json")
    assert response.status_code == 200 and response.json()["ticket"] == {"ticket": "T20240101.0001", "url": ""}
    before = rows()
    assert_error(world.api.post(url, {"ticket": "bad\x07"}, format="json"), 400, "invalid_request")
    assert_error(world.api.post(url, {}, format="json"), 400, "invalid_request")
    assert rows() == before
    assert world.api.post(url, {"ticket": ""}, format="json").json()["ticket"]["ticket"] == ""


INCIDENT_WRITES = [
    ("sessions/", {"session": "S"}),
    ("sessions/remove/", {"session": "S"}),
    ("status/", {"status": "resolved"}),
    ("ticket/", {"ticket": "1"}),
]


def test_another_tenants_incident_is_not_found(world):
    rival = factories.incident(world.rival, actor=world.rival_tech, sessions=[world.rival_session])
    sid = world.open_session()["id"]
    before = rows()
    assert_error(world.api.get(f"{V1}/incidents/{rival.pk}/"), 404, "not_found")
    for path, body in INCIDENT_WRITES:
        body = {k: (sid if v == "S" else v) for k, v in body.items()}
        assert_error(world.api.post(f"{V1}/incidents/{rival.pk}/{path}", body, format="json"), 404, "not_found")
    assert rows() == before


def test_a_viewer_reads_incidents_but_cannot_change_them(world):
    incident = create_incident(world)
    sid = world.open_session()["id"]
    viewer = client_for(world.viewer)
    assert viewer.get(f"{V1}/incidents/").status_code == 200
    assert viewer.get(f"{V1}/incidents/{incident['id']}/").status_code == 200
    before = rows()
    assert_error(viewer.post(f"{V1}/incidents/", {"title": "viewer"}, format="json"), 403, "forbidden")
    for path, body in INCIDENT_WRITES:
        body = {k: (sid if v == "S" else v) for k, v in body.items()}
        assert_error(viewer.post(f"{V1}/incidents/{incident['id']}/{path}", body, format="json"), 403, "forbidden")
    assert rows() == before


# --- a session's ticket -------------------------------------------------------------------------------


def test_open_a_session_with_a_ticket_and_change_it(world):
    Tenant.all_tenants.filter(pk=world.tenant.pk).update(
        ticket_url_template="https://ww5.autotask.net/Autotask/AutotaskExtend/ExecuteCommand.aspx"
        "?Code=OpenTicketDetail&TicketNumber={ticket}"
    )
    response = world.api.post(
        f"{V1}/sessions/", {"endpoint": str(world.app.pk), "ticket": "T20240101.0001&x=1"}, format="json"
    )
    assert response.status_code == 201, response.content
    session = response.json()
    assert session["ticket"]["url"].endswith("TicketNumber=T20240101.0001%26x%3D1")
    opened = TranscriptEntry.all_tenants.get(session_id=session["id"], kind="session.opened")
    assert opened.data["ticket"] == "T20240101.0001&x=1"
    changed = world.api.post(f"{V1}/sessions/{session['id']}/ticket/", {"ticket": "T2"}, format="json")
    assert changed.status_code == 200 and changed.json()["ticket"]["ticket"] == "T2"
    entry = TranscriptEntry.all_tenants.filter(session_id=session["id"]).order_by("-index").first()
    assert entry.kind == "session.ticket_set" and entry.data == {"ticket": "T2", "previous": "T20240101.0001&x=1"}
    listed = world.api.get(f"{V1}/sessions/").json()["results"]
    assert listed[0]["ticket"]["ticket"] == "T2"


def test_bad_session_tickets_are_400_and_change_nothing(world):
    sid = world.open_session()["id"]
    before = rows()
    for ticket in ("a\x00b", "a\nb", "x" * 65, ["list"]):
        body = {"endpoint": str(world.app.pk), "ticket": ticket}
        assert_error(world.api.post(f"{V1}/sessions/", body, format="json"), 400)
        assert_error(world.api.post(f"{V1}/sessions/{sid}/ticket/", {"ticket": ticket}, format="json"), 400)
    assert rows() == before
    assert_error(world.api.post(f"{V1}/sessions/{world.rival_session.pk}/ticket/", {"ticket": "1"}, format="json"), 404)
    assert_error(client_for(world.viewer).post(f"{V1}/sessions/{sid}/ticket/", {"ticket": "1"}, format="json"), 403)
    assert rows() == before
