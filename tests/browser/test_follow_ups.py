"""Follow-ups in a real Chromium against a real stack: a technician schedules a follow-up from a
session; when it falls due the stack's Celery beat sweep reminds them (the nav's count, the list,
an e-mail); opening it from the follow-ups page opens a session on the endpoint linked to the
earlier one, and both session pages show the link."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.browser import support
from tests.browser.support import (
    SESSION_URL,
    assert_not_reloaded,
    log_in,
    mail_to,
    mark_page,
    open_session,
    start_agent,
)
from tests.e2e.stack import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

TECH_EMAIL = "tech@acme-msp.example"


def test_a_due_follow_up_is_listed_reminded_and_opens_a_linked_session(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "fu01", "retail", run=False)  # the follow-up needs no running agent
    stack.django(
        "from django.contrib.auth import get_user_model;"
        f"get_user_model().objects.filter(username='{stack.login['username']}').update(email='{TECH_EMAIL}')"
    )
    log_in(page, stack)
    earlier = open_session(page, agent.endpoint_id, "INC-88 backups failing")

    # Schedule it from the session page (the server reads the naive time in its zone, UTC here).
    at = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Follow-up at").fill(at)
    page.locator("#fu-note").fill("check the nightly backup ran")
    page.get_by_role("button", name="Schedule follow-up").click()
    expect(page.locator("#follow-up-links")).to_contain_text("check the nightly backup ran")

    page.goto("/follow-ups/")
    row = page.locator("tr[data-follow-up]", has_text="fu01")
    expect(row).to_contain_text("scheduled")
    expect(page.locator("[data-field=follow-ups-due]")).to_have_count(0)
    shots(page, "follow-ups-scheduled")

    # Time passes: the follow-up falls due; the beat sweep reminds the technician, once: live on
    # the open page (no reload), by e-mail, and on the follow-ups page.
    page.goto("/")
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    stack.django(
        "from datetime import timedelta; from django.utils import timezone; from sessions_app.models import FollowUp;"
        f"FollowUp.all_tenants.filter(session_id='{earlier}').update(due_at=timezone.now() - timedelta(seconds=1))"
    )
    expect(page.locator("[data-field=follow-ups-due]")).to_have_text("1 due", timeout=120_000)
    expect(page.locator("#live-status")).to_contain_text("Follow-up due on fu01: check the nightly backup ran")
    assert_not_reloaded(page)
    mails = mail_to(stack, TECH_EMAIL, subject_contains="Follow-up due: fu01", timeout=60)
    assert "check the nightly backup ran" in mails[0].get_body().get_content()

    page.goto("/follow-ups/?status=due")
    expect(page.locator("[data-field=follow-ups-due]")).to_have_text("1 due")
    expect(row.locator("[data-field=state]")).to_contain_text(re.compile(r"due · reminded \d\d:\d\d"))
    shots(page, "follow-ups-due")

    row.get_by_role("button", name="Open follow-up session").click()
    expect(page).to_have_url(SESSION_URL)
    follow_up_session = SESSION_URL.search(page.url).group(1)
    assert follow_up_session != earlier
    link = page.locator("[data-field=earlier-session]")
    expect(link).to_have_attribute("href", f"/sessions/{earlier}/")
    expect(page.locator("#transcript")).to_contain_text("session.follow_up_of")
    expect(page.locator("[data-field=follow-ups-due]")).to_have_count(0)  # nothing due any more
    shots(page, "follow-up-session")

    link.click()
    expect(page).to_have_url(re.compile(f"/sessions/{earlier}/$"))
    expect(page.locator("[data-field=follow-up-session]")).to_have_attribute("href", f"/sessions/{follow_up_session}/")
    expect(page.locator("#transcript")).to_contain_text("session.follow_up_opened")
    wait_for(
        lambda: len(mail_to(stack, TECH_EMAIL, subject_contains="Follow-up due: fu01")) == 1,
        timeout=5,
        what="exactly one reminder e-mail",
    )
