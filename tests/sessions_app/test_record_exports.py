"""Selectors and exports of the record topics: the merged timeline's data, what a share link shows
(sessions_app/selectors/{incidents,sharing,review}.py), and the JSON and PDF exports of a reviewed
record (sessions_app/exports/json.py, sessions_app/exports/pdf.py), called directly."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from caisey import tenancy
from sessions_app.exports import json as json_export
from sessions_app.exports.pdf import record_pdf
from sessions_app.models import IncidentStatus
from sessions_app.selectors import incidents as incident_selectors
from sessions_app.selectors import review as review_selectors
from sessions_app.selectors import sharing as sharing_selectors
from sessions_app.services import incidents, review, sharing
from sessions_app.services import sessions as session_services
from tests import factories
from tests.sessions_app.test_sharing import SECRET, World, pdf_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return World()


def test_kind_filters_match_exact_kinds_and_families():
    assert incident_selectors.kind_matches("action.result", "action")
    assert incident_selectors.kind_matches("action.result", "action.result")
    assert incident_selectors.kind_matches("action.result", "")
    assert not incident_selectors.kind_matches("action.result", "act")
    assert not incident_selectors.kind_matches("actions.x", "action")


def test_incident_selectors_give_the_timeline_and_the_next_statuses(world):
    with world.bind():
        incident = incidents.incident_create(actor=world.tech, tenant_id=world.tenant.pk, title="ERP")
        assert incident_selectors.incident_next_statuses(incident=incident) == [
            IncidentStatus.RESOLVED,
            IncidentStatus.CLOSED,
        ]
        incidents.incident_add_session(actor=world.tech, incident=incident, session=world.session)
        timeline = incident_selectors.incident_timeline(incident=incident)
        assert timeline.sessions == [world.session]
        assert [row["cells"] for row in timeline.columns] == [[item] for item in timeline.items]
        assert "action" in timeline.kinds and "action.output" in timeline.kinds
        assert timeline.technicians == [(str(world.tech.pk), world.tech.username)]
        only_output = incident_selectors.incident_timeline(
            incident=incident, filters=incident_selectors.TimelineFilters(kind="action.output")
        )
        assert {i.entry.kind for i in only_output.items} == {"action.output"}


def test_reviewed_entries_mark_for_technicians_and_hide_for_clients(world):
    with world.bind():
        output = world.entry("action.output")
        review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment=SECRET)
        console = {e.entry.index: e for e in review_selectors.reviewed_entries(session=world.session, for_client=False)}
        client = {e.entry.index: e for e in review_selectors.reviewed_entries(session=world.session)}
    assert console[output.index].part_redacted and SECRET in "".join(f.text for f in console[output.index].fields)
    assert SECRET not in "".join(f.text for f in client[output.index].fields)
    assert review_selectors.REDACTED in "".join(f.text for f in client[output.index].fields)


def test_a_shared_record_shows_what_was_reviewed_the_current_one_everything(world):
    link, _ = world.link()
    with world.bind():
        session_services.session_add_note(actor=world.tech, session=world.session, text="after the link")
        shown = sharing_selectors.shared_record(link=link)
        now = sharing_selectors.current_record(session=world.session)
    upto = link.reviewed_upto[str(world.session.pk)]
    assert max(i.entry.index for i in shown.items) == upto
    assert max(i.entry.index for i in now.items) > upto
    assert shown.title == now.title == f"Support session on {world.endpoint.hostname}"
    assert shown.client == "Acme Client" and shown.link == link and now.link is None
    assert shown.endpoints == [world.endpoint.hostname] and shown.technicians == [world.tech.username]


def test_json_export_is_plain_data_with_a_checkable_manifest(world):
    with world.bind():
        review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)
        data = json_export.record_json(sharing_selectors.current_record(session=world.session))
    json.dumps(data)  # plain data, nothing but JSON types
    assert data["format"] == json_export.FORMAT and data["link"] is None and data["incident"] is None
    manifest = data["manifest"]
    assert manifest["sha256"] == json_export.manifest_digest(manifest["entries"])
    assert [m["index"] for m in manifest["entries"]] == [e["index"] for e in data["entries"]]
    assert data["sessions"][0]["chain"]["verified"] is True
    assert SECRET not in json.dumps(data["entries"])
    assert any(e["redacted"] == "part" for e in data["entries"])
    # The story the client reads, in the same export: steps in words, redactions applied.
    steps = data["story"]["steps"]
    assert [s["what"] for s in steps][:2] == [
        f"{world.tech.username} started a support session on acme-app01: ERP down",
        "Checked: System summary",
    ]
    assert steps[1]["outcome"].startswith("Completed") and SECRET not in json.dumps(data["story"])


def test_pdf_export_renders_the_record_as_the_client_sees_it(world):
    group = world.group
    with world.bind():
        review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)
        incident = incidents.incident_create(
            actor=world.tech, tenant_id=world.tenant.pk, title="Outage – Zürich ☃", client_group=group
        )
        incidents.incident_add_session(actor=world.tech, incident=incident, session=world.session)
        incidents.incident_write_summary(actor=world.tech, incident=incident, summary="Pool exhausted.")
        factories.mark_reviewed(world.tech, world.session)
        link, _ = sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))
        link = sharing_selectors.share_link_get(link_id=link.pk)  # as the page reads it
        pdf = record_pdf(sharing_selectors.shared_record(link=link))
    text = pdf_text(pdf)
    assert "Pool exhausted." in text and world.endpoint.hostname in text and "Acme Client" in text
    assert "Open" in text and "Link valid until" in text and SECRET not in text and "[redacted]" in text
    assert "Outage – Zürich ?" in text  # Windows-1252 covers the rest; the snowman prints as '?', not dropped
    # The story first (who reviewed it, what was done, in words), the event log as an appendix.
    story, appendix = text.split("Appendix: full event log")
    assert "Reviewed by:" in story and world.tech.username in story.split("Reviewed by:")[1].splitlines()[0]
    assert "What was done, in order" in story and "Checked: System summary" in story
    assert f"Requested by {world.tech.username}" in story and "Outcome: Completed" in story
    assert "What was found:" in story and "summary done" in story
    assert "action.queued" not in story and "latency_ms" not in text and "exit_code" not in text
    assert f"{world.tech.username} asked for a check to run" in appendix
    assert not re.search(r"\d\.\d{5,}", text)  # no float noise anywhere


def test_a_link_of_an_incident_shows_only_sessions_it_reviewed(world):
    other = factories.support_session(world.endpoint, opened_by=world.tech)
    with world.bind():
        incident = incidents.incident_create(actor=world.tech, tenant_id=world.tenant.pk, title="ERP")
        incidents.incident_add_session(actor=world.tech, incident=incident, session=world.session)
        factories.mark_reviewed(world.tech, world.session)
        link, _ = sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))
        incidents.incident_add_session(actor=world.tech, incident=incident, session=other)
        assert sharing_selectors.share_link_sessions(link=link) == [world.session]
        incidents.incident_remove_session(actor=world.tech, incident=incident, session=world.session)
        assert sharing_selectors.share_link_sessions(link=link) == []


def test_selectors_fail_closed_without_a_tenant(world):
    with tenancy.unbound(), pytest.raises(tenancy.TenantScopeMissing):
        review_selectors.reviewed_entries(session=world.session)
