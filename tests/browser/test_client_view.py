"""The client's view of a reviewed record (issue 10, item 8) in a real Chromium against a real
stack and a real `caisey-agent`: a technician runs a command and writes a note, the record can
only be shared once it is marked reviewed, and the client (no account) reads a story in words,
with figures formatted for people and the full event log folded away. The PDF says the same.
Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import io
import re

import pytest

from tests.browser import support
from tests.browser.support import log_in, open_session, run_shell, start_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The figure of the finding: a float as the outbox and the connectivity sweep compute it.
NOISE = 47.620999999999995
FLOAT_NOISE = re.compile(r"\d\.\d{5,}")


def test_client_reads_a_reviewed_story_with_the_event_log_folded(stack, page, outsider, shots):
    expect = support.expect()
    agent = start_agent(stack, "till07", "retail")
    log_in(page, stack)
    session_id = open_session(page, agent.endpoint_id, "Receipt printer stopped printing")
    card = run_shell(page, "echo spooler-running")
    expect(card.locator("[data-field=status]")).to_have_text("Succeeded")
    page.locator("#note-text").fill("Cleared the print queue; the printer prints again.")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("main")).to_contain_text("Cleared the print queue")
    # A connectivity change with a noisy p95, written as the connectivity sweep writes it.
    stack.django(
        "from caisey import tenancy; from sessions_app.models import SupportSession;"
        "from sessions_app.services.transcript import transcript_append; from django.db import transaction;"
        f"s = SupportSession.all_tenants.get(pk='{session_id}')\n"
        "with transaction.atomic(), tenancy.bind(s.tenant_id):\n"
        "    transcript_append(session=s, kind='bridge.connectivity', actor='bridge',"
        f" data={{'from': 'active', 'to': 'degraded', 'why': ['slow deliveries'], 'latency_p95_ms': {NOISE!r}}})"
    )
    # The real delivery latency the outbox recorded for the command (a float with many digits).
    latency = stack.json(
        "import json; from sessions_app.models import TranscriptEntry;"
        f"e = TranscriptEntry.all_tenants.filter(session_id='{session_id}', kind='action.dispatched').first();"
        "print(json.dumps(e.data.get('latency_ms') if e else None))"
    )

    # The review page offers the review step, not the share form, until the record is reviewed.
    page.goto(f"/sessions/{session_id}/review/")
    expect(page.locator("#review-step")).to_contain_text("Not reviewed yet.")
    expect(page.get_by_role("button", name="Create share link")).to_have_count(0)
    page.get_by_role("button", name="Mark as reviewed").click()
    expect(page.locator(".messages")).to_contain_text("Marked reviewed: you can share the record now.")
    expect(page.locator("#review-step")).to_contain_text("Reviewed by acme-tech")
    expect(page.get_by_role("button", name="Mark as reviewed")).to_have_count(0)
    page.get_by_label("For (optional)").fill("Store manager")
    page.get_by_role("button", name="Create share link").click()
    expect(page.get_by_role("heading", name="Share link created", level=1)).to_be_visible()
    url = page.get_by_label("Share link", exact=True).input_value()
    shots(page, "link-created-after-review")

    # The client, with no account, reads the story: what was done, in order, by whom, the outcome, the note.
    client = outsider.new_page()
    assert client.goto(url).status == 200
    expect(client.get_by_role("heading", name="Support session on till07", level=1)).to_be_visible()
    expect(client.locator("dl.facts")).to_contain_text("acme-tech")  # reviewed by
    expect(client.locator("dd.reviewed")).to_contain_text(re.compile(r"acme-tech, \d{1,2} \w{3} \d{4}, [\d:]{8} UTC"))
    steps = client.locator("ol.story > li")
    expect(steps.nth(0)).to_contain_text(
        "acme-tech started a support session on till07: Receipt printer stopped printing"
    )
    check = steps.filter(has_text="Ran a command")
    expect(check).to_have_count(1)
    expect(check).to_contain_text("Ran a command: echo spooler-running")
    expect(check).to_contain_text("Requested by acme-tech")
    expect(check.locator(".outcome")).to_have_text(re.compile(r"^Outcome: Completed in [\d.]+ (ms|s)$"))
    expect(check.locator("pre.found")).to_have_text("spooler-running\n")  # what the command found: its output
    expect(steps.filter(has_text="wrote a note")).to_contain_text("Cleared the print queue; the printer prints again.")
    expect(steps.last).to_contain_text("acme-tech reviewed the record")
    texts = steps.all_inner_texts()
    assert [i for i, t in enumerate(texts) if "Ran a command" in t] < [
        i for i, t in enumerate(texts) if "wrote a note" in t
    ]

    # The full event log is there, folded: closed until the client opens it, then formatted for people.
    log = client.locator("details.event-log")
    expect(log).to_have_count(1)
    expect(log).not_to_have_attribute("open", re.compile(".*"))
    expect(log.locator("ol.record")).to_be_hidden()
    shots(client, "client-story")
    log.locator("summary").click()
    expect(log.locator("ol.record")).to_be_visible()
    expect(log).to_contain_text("Slowest deliveries (95th percentile)")
    expect(log).to_contain_text("48 ms")
    expect(log).to_contain_text("The connection to the computer changed")
    shots(client, "client-event-log-open")
    visible = client.locator("body").inner_text()
    html = client.content()
    for raw in [repr(NOISE), "latency_ms", "latency_p95_ms", "exit_code", "action.queued"] + (
        [repr(latency)] if isinstance(latency, float) else []
    ):
        assert raw not in visible and raw not in html, raw
    assert not FLOAT_NOISE.search(visible), FLOAT_NOISE.search(visible)

    # The PDF tells the same story and keeps the event log as an appendix, without float noise.
    from pypdf import PdfReader

    pdf = outsider.request.get(url + "pdf")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    story, appendix = text.split("Appendix: full event log")
    assert "Ran a command: echo spooler-running" in story and "Requested by acme-tech" in story
    assert "Cleared the print queue; the printer prints again." in story and "Reviewed by: acme-tech" in story
    assert "48 ms" in appendix and repr(NOISE) not in text and not FLOAT_NOISE.search(text)
