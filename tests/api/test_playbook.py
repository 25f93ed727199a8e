"""The outage playbook of docs/api-playbook.md, run as written against a live test server.

The code block is taken from the page itself, so the documentation cannot drift from the API:
a renamed field or route fails here. The server is pytest-django's live server (a real HTTP
server on a socket, in a thread of this process); the client is ``requests``, as in the docs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from endpoints.models import Tenant
from sessions_app.models import Incident, Prompt, PromptState, SupportSession
from tests import factories

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api-playbook.md"


def playbook_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/api-playbook.md should hold exactly one Python example"
    return blocks[0]


@pytest.fixture
def world(transactional_db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tenant = factories.tenant("Acme IT")
    Tenant.all_tenants.filter(pk=tenant.pk).update(ticket_url_template="https://acme.halopsa.com/ticket?id={ticket}")
    group = factories.client_group(tenant, name="Dental Practice")
    hosts = [factories.endpoint(group, hostname=f"dental-{n:02}").endpoint for n in range(3)]
    other = factories.client_group(tenant, name="Law Firm")
    factories.endpoint(other, hostname="law-01")
    tech = factories.technician(tenant)
    return {"group": group, "hosts": hosts, "token": factories.api_token(tech)[1]}


def test_the_documented_outage_playbook_runs_against_a_live_server(live_server, world):
    namespace: dict = {"__name__": "playbook"}  # not "__main__": the block's command-line part stays out
    exec(compile(playbook_code(), str(PAGE), "exec"), namespace)
    result = namespace["outage_playbook"](
        live_server.url, world["token"], client_group=world["group"].slug, ticket="4821"
    )

    sessions = result["sessions"]
    assert sorted(s["endpoint"]["hostname"] for s in sessions) == ["dental-00", "dental-01", "dental-02"]
    assert all(s["ticket"] == {"ticket": "4821", "url": "https://acme.halopsa.com/ticket?id=4821"} for s in sessions)

    # Each restart asked the (offline) endpoint's user: an open prompt per session; one withdrawn.
    assert len(result["prompts"]) == 3 and all(p["open"] for p in result["prompts"])
    assert result["cancelled"]["state"] == PromptState.CANCELLED
    states = sorted(
        Prompt.all_tenants.filter(session_id__in=[s["id"] for s in sessions]).values_list("state", flat=True)
    )
    assert states == sorted([PromptState.CANCELLED, *[PromptState.FAILED_TO_DELIVER] * 2])

    incident = Incident.all_tenants.get(pk=result["incident"]["id"])
    assert incident.ticket == "4821"
    assert sorted(s["id"] for s in result["incident"]["sessions"]) == sorted(s["id"] for s in sessions)

    for s in sessions:
        kinds = [e["kind"] for e in result["transcripts"][s["id"]]]
        assert kinds[0] == "session.opened" and kinds.count("action.queued") == 2
        assert "prompt.pending" in kinds and kinds[-1] == "session.added_to_incident"
        assert [e["index"] for e in result["transcripts"][s["id"]]] == list(range(len(kinds)))
    cancelled_in = str(Prompt.all_tenants.get(pk=result["cancelled"]["id"]).session_id)
    assert "prompt.cancelled" in [e["kind"] for e in result["transcripts"][cancelled_in]]
    assert SupportSession.all_tenants.filter(endpoint__hostname="law-01").count() == 0
