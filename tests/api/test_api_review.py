"""The REST API of redactions and share links (sessions_app/api_sharing.py, the incidents' share
links in api_records.py): happy paths, another tenant's ids (404), viewers (403), bad input (400,
nothing changed)."""

from __future__ import annotations

import pytest

from endpoints.models import Role
from sessions_app.models import ShareLink, TranscriptEntry
from sessions_app.services.transcript import transcript_verify
from tests import factories
from tests.api.test_api import V1, assert_error, client_for
from tests.sessions_app.test_sharing import SECRET, World

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world():
    w = World()
    w.api = client_for(w.tech)
    w.viewer = client_for(factories.member(w.tenant, role=Role.VIEWER).user)
    w.outsider = client_for(factories.technician(factories.tenant("Other MSP")))
    return w


def rows() -> tuple:
    return (
        TranscriptEntry.all_tenants.count(),
        sorted(ShareLink.all_tenants.values_list("pk", "revoked_at")),
    )


def output_index(world) -> int:
    return world.entry("action.output").index


def test_redact_a_fragment_of_one_entry_then_everywhere(world):
    url = f"{V1}/sessions/{world.session.pk}/redactions/"
    index = output_index(world)
    response = world.api.post(url, {"entry": index, "fragment": SECRET}, format="json")
    assert response.status_code == 201, response.content
    (written,) = response.json()
    assert written["entry"] == index and written["whole"] is False and written["occurrences"] == 1
    assert TranscriptEntry.all_tenants.get(session=world.session, index=written["index"]).kind == "review.redaction"
    before = rows()
    again = world.api.post(url, {"scope": "session", "fragment": SECRET}, format="json")
    assert "does not occur (unredacted)" in assert_error(again, 400, "rejected")["detail"]
    assert rows() == before
    whole = world.api.post(url, {"entry": 0, "whole": True}, format="json")
    assert whole.status_code == 201 and whole.json()[0]["whole"] is True
    assert transcript_verify(session_id=world.session.pk)[0]  # the record itself is never rewritten


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"entry": 0},
        {"scope": "session"},
        {"scope": "session", "fragment": "   "},
        {"scope": "everywhere", "fragment": "x"},
        {"entry": -1, "whole": True},
        {"entry": 9999, "whole": True},
        {"entry": 0, "fragment": "does not occur"},
        {"entry": "OUT", "fragment": "x" * 10_001},
        {"entry": "OUT", "fragment": "a\x00b"},
    ],
)
def test_bad_redactions_are_400_and_write_nothing(world, body):
    body = {k: (output_index(world) if v == "OUT" else v) for k, v in body.items()}
    before = rows()
    assert_error(world.api.post(f"{V1}/sessions/{world.session.pk}/redactions/", body, format="json"), 400)
    assert rows() == before


def test_redactions_refuse_viewers_and_other_tenants(world):
    before = rows()
    body = {"scope": "session", "fragment": SECRET}
    assert_error(world.viewer.post(f"{V1}/sessions/{world.session.pk}/redactions/", body, format="json"), 403)
    assert_error(world.outsider.post(f"{V1}/sessions/{world.session.pk}/redactions/", body, format="json"), 404)
    assert rows() == before


def test_read_and_revoke_a_share_link(client, world):
    link, token = world.link(label="for the client")
    response = world.api.get(f"{V1}/share-links/{link.pk}/")
    assert response.status_code == 200 and response.json()["label"] == "for the client"
    assert token not in response.content.decode() and response.json()["revoked_at"] is None
    revoked = world.api.post(f"{V1}/share-links/{link.pk}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == world.tech.get_username()
    assert world.entry("share.link_revoked") is not None
    assert client.get(f"/share/{token}/").status_code == 404
    before = rows()
    assert "already revoked" in assert_error(world.api.post(f"{V1}/share-links/{link.pk}/revoke/"), 400)["detail"]
    assert rows() == before


def test_share_links_refuse_viewers_and_other_tenants(world):
    link, _ = world.link()
    before = rows()
    assert world.viewer.get(f"{V1}/share-links/{link.pk}/").status_code == 200
    assert_error(world.viewer.post(f"{V1}/share-links/{link.pk}/revoke/"), 403, "forbidden")
    assert_error(world.outsider.get(f"{V1}/share-links/{link.pk}/"), 404, "not_found")
    assert_error(world.outsider.post(f"{V1}/share-links/{link.pk}/revoke/"), 404, "not_found")
    assert_error(world.api.post(f"{V1}/share-links/not-a-uuid/revoke/"), 404)
    assert rows() == before


def test_an_incident_share_link_needs_every_session_reviewed(world):
    incident = factories.incident(world.tenant, actor=world.tech, sessions=[world.session])
    url = f"{V1}/incidents/{incident.pk}/share-links/"
    before = rows()
    assert "not been reviewed" in assert_error(world.api.post(url, {}, format="json"), 400, "rejected")["detail"]
    assert_error(world.api.post(url, {"expires_in_days": 0}, format="json"), 400, "invalid_request")
    assert_error(world.viewer.post(url, {}, format="json"), 403)
    assert_error(world.outsider.post(url, {}, format="json"), 404)
    assert rows() == before
    factories.mark_reviewed(world.tech, world.session)
    response = world.api.post(url, {"expires_in_days": 2, "label": "client"}, format="json")
    assert response.status_code == 201, response.content
    link = ShareLink.all_tenants.get(pk=response.json()["id"])
    assert link.incident_id == incident.pk and "/share/shr_" in response.json()["url"]
