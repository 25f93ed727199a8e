"""Incidents, review and share links in a real Chromium against a real stack and real
`caisey-agent` processes: a team lead groups two technicians' sessions into an incident, a
session's record is reviewed (a secret redacted, an entry withheld), and the reviewed record is
shared with the client through a link that needs no account, downloads as PDF and JSON, and
stops working when revoked or expired. Screenshots land in test-artifacts/screenshots/.

The tests share one stack per module but not state: each enrolls agents of its own (in the
`retail` client group, whose policy gates nothing, so commands run without a prompt).
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.browser import support
from tests.browser.support import assert_skip_link, log_in, open_session, run_shell, start_agent
from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

SHARE_URL = re.compile(r"^http://127\.0\.0\.1:\d+/share/shr_[A-Za-z0-9_-]+/$")


def secret() -> str:
    return f"sk-live-{uuid.uuid4().hex[:12]}"


def entry(page, kind: str):
    """A review page's record entry by its transcript kind (the first one of that kind)."""
    return (
        page.locator("ol.entry-list > li")
        .filter(has=page.locator(".kind", has_text=re.compile(rf"^\s*{re.escape(kind)}\b")))
        .first
    )


def test_incident_groups_two_sessions_and_review_redacts(stack, page, outsider, shots):
    expect = support.expect()
    key = secret()
    agents = {name: start_agent(stack, name, "retail") for name in ("till01", "till02")}
    log_in(page, stack)

    # Two sessions on the outage, each running a command; on till01 its output shows a secret.
    sessions = {}
    for name, agent in agents.items():
        sessions[name] = open_session(page, agent.endpoint_id, f"INC-88 {name} cannot reach the POS server")
        card = run_shell(page, f"echo {name}-pos-ok; echo api_key={key}" if name == "till01" else f"echo {name}-pos-ok")
        expect(card.locator("[data-field=status]")).to_have_text("Succeeded")
        expect(card.locator("[data-field=output]")).to_contain_text(f"{name}-pos-ok")
    expect(card.locator("[data-field=output]")).not_to_contain_text(key)

    # The team lead groups them into an incident for the retail client.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Incidents").click()
    expect(page.get_by_role("heading", name="Incidents", level=1)).to_be_visible()
    page.get_by_label("Title").fill("Tills offline at the retail client")
    page.get_by_label("Client").select_option(label="retail client")
    page.get_by_role("button", name="Create incident").click()
    title = re.compile(r"^Tills offline at the retail client")
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    expect(page.locator("table.incident-sessions")).to_contain_text("No sessions yet")
    incident_url = page.url
    for name in agents:
        picker = page.get_by_label(re.compile(r"^Add a recent session"))
        option = picker.locator("option").filter(has_text=re.compile(rf"^{name} · "))
        expect(option).to_have_count(1)
        assert option.get_attribute("value") == sessions[name]
        picker.select_option(sessions[name])
        page.get_by_role("button", name="Add to incident").click()
        expect(page.locator(".messages")).to_contain_text(f"Added the session on {name}.")

    # The incident page lists both sessions and merges their records into one timeline.
    rows = page.locator("table.incident-sessions tbody tr")
    expect(rows).to_have_count(2)
    for name in agents:
        row = rows.filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-session", sessions[name])
        expect(page.locator("#timeline")).to_contain_text(f"{name} · technician acme-tech")
        expect(page.locator("#timeline")).to_contain_text(f"{name}-pos-ok")
    expect(page.locator("#timeline")).to_contain_text("session.added_to_incident")
    shots(page, "incident")
    # Side by side: one column per session.
    page.get_by_label("Layout").select_option("side")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("table.side thead th")).to_have_count(3)  # time, till01, till02
    expect(page.locator("table.side thead")).to_contain_text("till01")
    expect(page.locator("table.side thead")).to_contain_text("till02")
    shots(page, "incident-side-by-side")

    # Review till01's record: redact the secret everywhere, withhold one entry.
    page.goto(incident_url)
    rows.filter(has=page.get_by_role("link", name="till01", exact=True)).get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review the record of the session on till01", level=1)).to_be_visible()
    expect(page.locator("ol.entry-list mark.redacted-orig")).to_have_count(0)
    page.get_by_label("Text to redact (exact, e.g. a password)").fill(key)
    page.get_by_role("button", name="Redact everywhere").click()
    expect(page.locator(".messages")).to_contain_text(re.compile(r"Redacted in \d+ entr"))
    # The technician still sees the original, with the redacted text marked and the entries flagged.
    expect(page.locator("ol.entry-list mark.redacted-orig").first).to_contain_text(key)
    expect(page.locator("ol.entry-list > li.part-redacted")).not_to_have_count(0)
    expect(entry(page, "action.queued").locator(".badge")).to_have_text("partly redacted when shared")
    expect(entry(page, "action.queued").locator("mark.redacted-orig")).to_have_text(re.compile(rf"^{key}"))
    expect(entry(page, "review.redaction")).to_contain_text(
        re.compile(r"part of entry #\d+ \(action\.\w+\) was redacted")
    )
    expect(page.locator("article > p.meta")).to_contain_text(re.compile(r"\d+ entr(y|ies) redacted so far"))

    dispatched = entry(page, "action.dispatched")
    dispatched.locator("summary", has_text="Review entry").click()
    dispatched.get_by_role("button", name="Withhold the whole entry").click()
    expect(page.locator(".messages")).to_contain_text(re.compile(r"Entry #\d+ redacted\."))
    dispatched = entry(page, "action.dispatched")
    expect(dispatched).to_have_class(re.compile(r"\bwhole-redacted\b"))
    expect(dispatched.locator(".badge")).to_have_text("withheld when shared")
    expect(dispatched.get_by_role("button", name="Withhold the whole entry")).to_have_count(0)
    shots(page, "review-redacted")

    # The preview shows what the client would see: the secret is gone, the withheld entry says so.
    page.get_by_role("link", name="Preview as the client sees it").click()
    expect(page.locator(".preview-banner")).to_be_visible()
    expect(page.locator("main")).to_contain_text("[redacted]")
    expect(page.locator("main")).to_contain_text("This entry was withheld after review.")
    expect(page.locator("main")).to_contain_text("till01-pos-ok")
    assert key not in page.content()
    shots(page, "review-preview")

    # The tenant requires a review before sharing: the incident page offers the review step for
    # each session instead of the share form; each is marked reviewed (the reviewer's name is recorded).
    page.goto(incident_url)
    expect(page.get_by_role("button", name="Create share link")).to_have_count(0)
    for name in agents:
        page.get_by_role("link", name=f"Review the session on {name}").click()
        expect(page.locator("#review-step")).to_contain_text("Not reviewed yet.")
        page.get_by_role("button", name="Mark as reviewed").click()
        expect(page.locator(".messages")).to_contain_text("Marked reviewed")
        expect(page.locator("#review-step")).to_contain_text("Reviewed by acme-tech")
        page.goto(incident_url)

    # Shared from the incident page, the client sees both sessions; till01's secret stays redacted.
    page.get_by_label("For (optional)").fill("Store manager")
    page.get_by_role("button", name="Create share link").click()
    expect(page.get_by_role("heading", name="Share link created", level=1)).to_be_visible()
    url = page.get_by_label("Share link", exact=True).input_value()
    assert SHARE_URL.match(url), url
    client = outsider.new_page()
    assert client.goto(url).status == 200
    expect(client.get_by_role("heading", name="Tills offline at the retail client", level=1)).to_be_visible()
    expect(client.locator("dl.facts")).to_contain_text("till01, till02")
    expect(client.locator("ol.story")).to_contain_text("till01-pos-ok")
    expect(client.locator("ol.story")).to_contain_text("till02-pos-ok")
    expect(client.locator("ol.story")).to_contain_text("api_key=[redacted]")
    expect(client.locator("ol.record mark.redacted").first).to_have_text("[redacted]")
    expect(client.locator("ol.record")).to_contain_text("api_key=[redacted]")
    expect(client.locator("ol.record")).to_contain_text("This entry was withheld after review.")
    assert key not in client.content()
    shots(client, "incident-shared")


def _session_with_redacted_secret(stack, hostname: str, key: str) -> str:
    """A session on a new retail agent whose shell output showed `key`, redacted in review (by the services)."""
    tech = stack.login["username"]
    agent = start_agent(stack, hostname, "retail")
    session_id = stack.json(h.open_session(tech, agent.endpoint_id))
    action = stack.json(h.run(tech, session_id, "shell", {"command": f"echo {hostname}-ok; echo password={key}"}))
    wait_for(lambda: stack.json(h.action_state(action))["status"] == "succeeded", timeout=60, what="command done")
    stack.django(
        h.PRELUDE.format(tech=tech) + "from sessions_app.services import review;"
        f"s = SupportSession.all_tenants.get(pk='{session_id}')\n"
        "with tenancy.bind(s.tenant_id):\n"
        f"    review.session_redact_fragment(actor=tech, session=s, text_fragment='{key}')"
    )
    return session_id


def _mark_reviewed(page) -> None:
    """The review step on a session's review page, when the record has no current review."""
    button = page.get_by_role("button", name="Mark as reviewed")
    if button.count():
        button.click()
        support.expect()(page.locator(".messages")).to_contain_text("Marked reviewed")


def _create_link(page, label: str) -> str:
    _mark_reviewed(page)
    page.get_by_label("For (optional)").fill(label)
    page.get_by_label("Expires after").select_option(label="1 day")
    page.get_by_role("button", name="Create share link").click()
    expect = support.expect()
    expect(page.get_by_role("heading", name="Share link created", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text("it is shown only this once")
    url = page.get_by_label("Share link", exact=True).input_value()
    assert SHARE_URL.match(url), url
    return url


def test_share_link_downloads_revoke_and_expiry(stack, page, outsider, shots):
    expect = support.expect()
    key = secret()
    session_id = _session_with_redacted_secret(stack, "till03", key)
    review_path = f"/sessions/{session_id}/review/"
    log_in(page, stack, next_path=review_path)
    expect(page.get_by_role("heading", name="Review the record of the session on till03", level=1)).to_be_visible()
    expect(page.get_by_text("No share links yet.")).to_be_visible()

    # Create a link from the review page; it is shown once.
    url = _create_link(page, "Dana at the retail client")
    shots(page, "link-created")

    # The client opens it with no account: the transcript shows, the secret does not.
    client = outsider.new_page()
    response = client.goto(url)
    assert response.status == 200
    assert "no-store" in response.headers["cache-control"]
    expect(client.get_by_role("heading", name="Support session on till03", level=1)).to_be_visible()
    record = client.locator("ol.record")
    expect(record).to_contain_text("till03-ok")
    expect(record).to_contain_text("password=[redacted]")
    expect(client.locator(".redaction-notice")).to_be_visible()
    assert key not in client.content()
    shots(client, "client-view")
    # The keyboard: Tab, the skip link, Enter, focus in the main content (its first control is the PDF link).
    assert_skip_link(client, "share page")

    # The PDF downloads, and is one.
    with client.expect_download() as download:
        client.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == "caisey-record.pdf"
    with open(download.value.path(), "rb") as f:
        assert f.read(5) == b"%PDF-"
    pdf = outsider.request.get(url + "pdf")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.body().startswith(b"%PDF-")

    # The technician's JSON export of exactly what the link shows.
    page.get_by_role("link", name="Back").click()
    row = page.locator("table.links tbody tr").filter(has_text="Dana at the retail client")
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("active")
    expect(row.locator(".view-log summary")).to_have_text(re.compile(r"^\d+ views$"))  # the page, the PDFs
    link_id = row.get_attribute("data-link")
    export = row.get_by_role("link", name="JSON export")
    with page.expect_download() as download:
        export.click()
    assert download.value.suggested_filename == f"share-{link_id}.json"
    with open(download.value.path(), encoding="utf-8") as f:
        raw = f.read()
    data = json.loads(raw)
    assert data["format"] == "caisey.reviewed-record/1" and data["link"]["id"] == link_id
    assert data["sessions"][0]["endpoint"] == "till03" and data["sessions"][0]["chain"]["verified"] is True
    texts = [fl["text"] for e in data["entries"] for fl in e["fields"]]
    assert any("password=[redacted]" in t for t in texts), texts
    assert key not in raw
    exported = page.request.get(export.get_attribute("href"))
    assert exported.status == 200 and exported.headers["content-type"] == "application/json"
    json.loads(exported.text())

    # Revoked in the console: the client's browser now gets the plain "not valid" page.
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("The link was revoked; it no longer opens.")
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    response = client.goto(url)
    assert response.status == 404
    expect(client.get_by_role("heading", name="This link is not valid", level=1)).to_be_visible()
    assert key not in client.content() and "till03" not in client.content()
    assert outsider.request.get(url + "pdf").status == 404
    shots(client, "client-revoked")
    assert_skip_link(client, "share link not valid", control_in_main=False)

    # An expired link: made now, opens; once past its expiry (moved into the past in the
    # database: the shortest expiry the console offers is a day), it is the same plain page.
    page.goto(review_path)
    url2 = _create_link(page, "Expiring copy")
    assert url2 != url
    assert client.goto(url2).status == 200
    expect(client.get_by_role("heading", name="Support session on till03", level=1)).to_be_visible()
    page.goto(review_path)
    row2 = page.locator("table.links tbody tr").filter(has_text="Expiring copy")
    link2 = row2.get_attribute("data-link")
    stack.django(
        "from datetime import timedelta; from django.utils import timezone; from sessions_app.models import ShareLink;"
        f"assert ShareLink.all_tenants.filter(pk='{link2}')"
        ".update(expires_at=timezone.now() - timedelta(seconds=1)) == 1"
    )
    response = client.goto(url2)
    assert response.status == 404
    expect(client.get_by_role("heading", name="This link is not valid", level=1)).to_be_visible()
    page.reload()
    expect(row2.locator(".badge")).to_have_text("expired")
    expect(row2.get_by_role("button", name="Revoke")).to_have_count(0)
    shots(page, "links-revoked-expired")
