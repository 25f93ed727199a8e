"""Presence at session open in a real Chromium, with a real stack and a real agent (issue 15 item 2):
a session opened on a lazy endpoint whose last heartbeat is older than the active cadence's
deadline (30 s here: 2 beats of 10 s and 10 s of grace) is never shown offline or read-only; it is
waking, then active, without a reload. The stack's lazy cadence is 60 s, so the test waits for a
moment between 33 and 50 s after a lazy beat and opens the session then."""

from __future__ import annotations

import pytest

from tests.browser import support
from tests.browser.support import SESSION_URL, assert_not_reloaded, log_in, mark_page, start_agent
from tests.e2e.stack import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Every text the page's connectivity badge shows from the moment it is watched.
WATCH_BADGE = """() => {
  const badge = document.querySelector("h1 [data-field=presence]");
  window.__caiseyStates = [badge.textContent.trim()];
  new MutationObserver(() => {
    const now = document.querySelector("h1 [data-field=presence]");
    window.__caiseyStates.push(now ? now.textContent.trim() : "");
  }).observe(document.querySelector("h1"), {subtree: true, childList: true, characterData: true});
}"""


def last_beat_age(stack, endpoint_id: str) -> float:
    return stack.json(
        "import json; from django.utils import timezone; from endpoints.models import Endpoint;"
        f"e = Endpoint.all_tenants.get(pk='{endpoint_id}');"
        "print(json.dumps((timezone.now() - e.last_seen_at).total_seconds()))"
    )


def test_a_session_on_a_lazy_endpoint_last_seen_long_ago_is_waking_then_active_live(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "sleepy01", "retail")
    log_in(page, stack)
    page.goto(f"/endpoints/{agent.endpoint_id}/")
    expect(page.locator("h1 [data-field=presence]")).to_have_text("lazy")
    page.get_by_label("Reason (ticket, symptom)").fill("INC-9 printer")
    wait_for(lambda: 33 < last_beat_age(stack, agent.endpoint_id) < 50, timeout=150, interval=1, what="a stale beat")
    page.get_by_role("button", name="Open a session").click()
    expect(page).to_have_url(SESSION_URL)
    page.evaluate(WATCH_BADGE)
    mark_page(page)
    presence = page.locator("h1 [data-field=presence]")
    expect(presence).to_have_text("active")
    states = page.evaluate("() => window.__caiseyStates")
    assert "offline" not in states, states
    assert set(states) <= {"waking", "active"}, states
    expect(page.locator("#readonly-banner")).to_have_count(0)
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    shots(page, "active")
    assert_not_reloaded(page)
    assert "mode set to active" in agent.log_text()

    # The page's formatter (times.js) reads times as the server's filter does (caisey/templatetags/times.py).
    formatted = page.evaluate(
        """() => [caiseyTimes.absolute(new Date("2026-12-05T05:26:10Z")),
                  caiseyTimes.relative(new Date(Date.now() - 200e3)),
                  caiseyTimes.relative(new Date(Date.now() + 7201e3)),
                  caiseyTimes.relative(new Date(Date.now() - 2e3))]"""
    )
    assert formatted == ["2026-12-05 05:26:10 UTC", "3 min ago", "in 2 h", "just now"]
