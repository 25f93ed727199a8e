"""Wake or wait in a real Chromium, with a real stack and a real agent: a session opened without
waking keeps the endpoint lazy; a diagnostic queued "don't wake" says so on its card, runs at the
endpoint's lazy check-in (the card turns live, the endpoint stays lazy); "Wake now" on a waiting
one switches the endpoint to active and the action runs at once."""

from __future__ import annotations

import re

import pytest

from tests.browser import support
from tests.browser.support import SESSION_URL, action_card, assert_not_reloaded, log_in, mark_page, start_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LAZY_CHECK_IN_MS = 180_000  # the stack's lazy cadence is 60 s; the outbox sweep and a busy machine add to it


def queue_without_waking(page):
    page.get_by_label("Diagnostic or command", exact=True).select_option("system_summary")
    page.get_by_role("radio", name=re.compile(r"^Don.t wake it: run at its next check-in")).check()
    page.get_by_role("button", name="Run", exact=True).click()


def test_dont_wake_runs_at_the_check_in_and_wake_now_wakes(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "lazy01", "retail")
    log_in(page, stack)
    page.goto(f"/endpoints/{agent.endpoint_id}/")
    page.get_by_label("Reason (ticket, symptom)").fill("INC-5 slow disk")
    page.get_by_label("Don't wake it (it keeps its lazy check-ins)").check()
    page.get_by_role("button", name="Open a session").click()
    expect(page).to_have_url(SESSION_URL)
    presence = page.locator("h1 [data-field=presence]")
    expect(presence).to_have_text("lazy")
    expect(page.get_by_role("radio", name=re.compile(r"^Wake it now"))).to_be_checked()  # the default: as before

    # Don't wake: the card says it waits; it runs at the lazy check-in, live; the endpoint stays lazy.
    queue_without_waking(page)
    card = action_card(page, "system_summary")
    expect(card.locator("[data-field=wake]")).to_have_text("waits for the endpoint's next check-in, not waking it")
    expect(card.get_by_role("button", name="Wake now")).to_be_visible()
    shots(page, "waiting")
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    expect(card.locator("[data-field=status]")).to_have_text("Succeeded", timeout=LAZY_CHECK_IN_MS)
    expect(card.locator("[data-field=wake]")).to_have_text("ran at the endpoint's check-in, without waking it")
    expect(card.get_by_role("button", name="Wake now")).to_have_count(0)
    expect(presence).to_have_text("lazy")
    assert_not_reloaded(page)
    assert "mode set to active" not in agent.log_text()

    # Wake now: the endpoint goes active and the action runs without waiting for the check-in.
    queue_without_waking(page)
    second = action_card(page, "system_summary").filter(has=page.get_by_role("button", name="Wake now"))
    expect(second).to_have_count(1)
    second.get_by_role("button", name="Wake now").click()
    woken = action_card(page, "system_summary").filter(has_text="endpoint woken for it at")
    expect(woken).to_have_count(1)
    expect(presence).to_have_text("active")
    # Sent at once (tests/e2e/test_wake_or_wait.py checks it left before the check-in it waited for).
    expect(woken.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(page.locator("#transcript")).to_contain_text("action.woken")
    shots(page, "woken")
