"""Connectivity live and honest, and an endpoint that goes offline mid-session (issue 10, items 1-2),
in a real Chromium against a real stack and a real `caisey-agent`, without a single reload:

freeze the agent (SIGSTOP) while a command runs: the session page's badge, read-only banner and run
form change by themselves, the running action says "endpoint unreachable since ...", and it is
given up at its deadline; resume it (SIGCONT): the page comes back, and the result that arrives
afterwards is shown on the card without reviving it. Kill it: the page shows the machine's last
known state with the time it was reported (refreshed while connected, not the one from the
connect). Start it again: the reconnect makes the path degraded (the threshold is lowered to one
reconnect), and "degraded" with its reason reaches the session page and the endpoint list live.

The stack runs with short intervals (its env settings): 2 s active heartbeats, offline after two
missed beats plus 2 s, the machine context sent again every 2 s.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime

import pytest

from tests.browser import support
from tests.browser.support import (
    action_card,
    assert_not_reloaded,
    endpoint_row,
    log_in,
    mark_page,
    open_session,
    start_agent,
)
from tests.e2e import helpers as h
from tests.e2e.stack import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

FAST = {
    "CAISEY_HEARTBEAT_ACTIVE_S": "2",
    "CAISEY_HEARTBEAT_LAZY_S": "4",
    "CAISEY_PRESENCE_MISSED_BEATS": "2",
    "CAISEY_PRESENCE_GRACE_S": "2",
    "CAISEY_CONTEXT_REFRESH_S": "2",
    "CAISEY_DEGRADED_RECONNECTS": "1",
}
UP = re.compile(r"^\s*(lazy|active|waking|degraded)\s*$")


@pytest.fixture(scope="module")
def stack(redis_server, browser):
    """This module's own stack (Daphne and a Celery worker with beat) with short intervals."""
    s = Stack(extra_env=FAST)
    try:
        s.port = s.start_server()
        s.worker = s.start_worker()
        s.login = s.seed(group="field")
        s.django(h.set_policy("field", "none"))  # the shell command runs without the user's approval
        s.base_url = f"http://127.0.0.1:{s.port}"
    except BaseException:
        print(s.logs())
        s.cleanup()
        raise
    try:
        yield s
    finally:
        s.cleanup()


def seen(what: str, since: float) -> None:
    """A figure for the record (run with -s to read them); timings are never asserted."""
    print(f"measured: {what}: {time.monotonic() - since:.1f} s")


def endpoint_times(stack, hostname: str) -> dict:
    return stack.json(
        "import json; from endpoints.models import Endpoint;"
        f"e = Endpoint.all_tenants.get(hostname='{hostname}');"
        "print(json.dumps({'connected_at': e.connected_at.isoformat(),"
        " 'context_updated_at': e.context_updated_at.isoformat() if e.context_updated_at else None}))"
    )


def test_offline_mid_session_and_back_live(stack, context, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "lap01", "field")
    log_in(page, stack)
    endpoint_id = stack.json(
        "import json; from endpoints.models import Endpoint;"
        "print(json.dumps(str(Endpoint.all_tenants.get(hostname='lap01').pk)))"
    )
    session_id = open_session(page, endpoint_id, "INC-7 laptop drops off")
    badge = page.locator("h1 [data-field=presence]")
    expect(badge).to_have_text(re.compile(r"^\s*active\s*$"))  # woken by the session, live
    expect(page.locator("#readonly-banner")).to_have_count(0)

    # The endpoint list, open in another tab, watches the same endpoint.
    listing = context.new_page()
    listing.goto("/")
    row = endpoint_row(listing, "lap01")
    expect(row.locator("[data-field=presence]")).to_have_text(UP)
    expect(listing.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(listing)
    # And the endpoint's own page, in a third.
    detail = context.new_page()
    detail.goto(f"/endpoints/{endpoint_id}/")
    expect(detail.locator("h1 [data-field=presence]")).to_have_text(UP)
    expect(detail.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(detail)

    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    page.get_by_label("Diagnostic or command", exact=True).select_option("shell")
    page.locator("fieldset.params[data-kind=shell]").get_by_label("Command (required)").fill(
        "sleep 45; echo late-result-42"
    )
    page.get_by_role("button", name="Run", exact=True).click()
    assert page.url.endswith(f"/sessions/{session_id}/")
    mark_page(page)  # the POST redirected back (PRG): from here on, nothing reloads
    card = action_card(page, "shell")
    expect(card.locator("[data-field=status]")).to_have_text("Running")

    # Freeze the agent: no clean disconnect, its heartbeats just stop.
    agent.proc.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        expect(badge).to_have_text("offline")
        banner = page.locator("#readonly-banner")
        expect(banner).to_be_visible()
        seen("SIGSTOP -> read-only banner", frozen)
        expect(banner).to_contain_text("Read-only: lap01 is offline since")
        expect(banner).to_contain_text("heartbeats stopped")
        expect(page.get_by_role("heading", name="Queue an action for when it returns")).to_be_visible()
        expect(page.get_by_role("button", name="Queue", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Run", exact=True)).to_have_count(0)
        expect(card.locator("[data-field=status]")).to_have_text("Running")
        expect(card.locator("[data-field=unreachable]")).to_contain_text("Endpoint unreachable since")
        expect(page.get_by_role("heading", name=re.compile(r"^Last known machine state"))).to_be_visible()
        expect(row.locator("[data-field=presence]")).to_have_text("offline")
        expect(row.locator("[data-field=connectivity_reason]")).to_contain_text("heartbeats stopped")
        expect(detail.locator("#connectivity-banner")).to_contain_text("This endpoint is offline")
        shots(page, "frozen")

        # It does not come back in time: the shell kind's deadline (330 s) is brought forward in the
        # database, where deadlines live; the deadline sweep (every 5 s) gives the action up.
        stack.django(
            "from datetime import timedelta; from django.utils import timezone; from sessions_app.models import Action;"
            "Action.all_tenants.filter(kind='shell', endpoint__hostname='lap01', status='running')"
            ".update(deadline_at=timezone.now() - timedelta(seconds=1))"
        )
        brought_forward = time.monotonic()
        expect(card.locator("[data-field=status]")).to_have_text("Timed out")
        seen("deadline passed -> card given up", brought_forward)
        expect(card).to_contain_text("Given up: endpoint unreachable since")
        expect(card.locator("[data-field=unreachable]")).to_have_count(0)
        assert_not_reloaded(page)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()

    # It resumes: the page comes back by itself.
    expect(badge).to_have_text(UP)
    expect(page.locator("#readonly-banner")).to_have_count(0)
    seen("SIGCONT -> banner gone", resumed)
    expect(page.get_by_role("heading", name="Run a diagnostic or command")).to_be_visible()
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    expect(row.locator("[data-field=presence]")).to_have_text(UP)
    expect(detail.locator("#connectivity-banner")).not_to_contain_text("offline")
    # The command finishes on the endpoint: its result is shown, the action stays given up.
    late = card.locator("[data-field=late_result]")
    expect(late).to_contain_text("Result arrived after the action was given up", timeout=90_000)
    expect(late).to_contain_text("the action stays timed out")
    expect(card.locator("[data-field=status]")).to_have_text("Timed out")
    expect(card.locator("[data-field=output]")).to_contain_text("late-result-42")
    shots(page, "late-result")
    assert_not_reloaded(page)

    # The machine context is refreshed while it is connected (every 2 s here), not only at connect.
    def refreshed():
        t = endpoint_times(stack, "lap01")
        at = datetime.fromisoformat(t["context_updated_at"])
        return t if (at - datetime.fromisoformat(t["connected_at"])).total_seconds() > 3 else None

    wait_for(refreshed, timeout=30, what="a machine context sent with a heartbeat")

    # Killed: the page shows the last known state with the time it was reported.
    agent.kill()
    killed = time.monotonic()
    expect(badge).to_have_text("offline")
    expect(page.locator("#readonly-banner")).to_be_visible()
    seen("SIGKILL -> read-only banner", killed)
    expect(page.locator("#readonly-banner")).to_contain_text("the agent's connection closed")
    last = endpoint_times(stack, "lap01")
    reported = datetime.fromisoformat(last["context_updated_at"])
    assert (reported - datetime.fromisoformat(last["connected_at"])).total_seconds() > 3
    machine = page.locator("#machine-state")
    # Relative ("reported 4 s ago"), the full time on hover (caisey/templatetags/times.py).
    full = f"{reported:%Y-%m-%d %H:%M:%S} UTC"
    expect(machine.get_by_role("heading")).to_contain_text(re.compile(r"reported (just now|\d+ s ago)"))
    expect(machine.locator("h2 time[data-field=context_updated_at]")).to_have_attribute("title", full)
    # The banner's last time is "reported ..." (its first, "offline since ...", can fall in the same
    # second: CI on PostgreSQL found two times with this title).
    expect(page.locator("#readonly-banner time").last).to_have_attribute("title", full)
    shots(page, "killed")
    assert_not_reloaded(page)

    # Back again: one reconnect in the window is degraded here, and that is pushed live too.
    agent.start()
    started = time.monotonic()
    expect(badge).to_have_text("degraded")
    seen("restart -> degraded badge", started)
    expect(page.locator("h1 [data-field=connectivity_reason]")).to_contain_text(re.compile(r"reconnects? in the last"))
    expect(page.locator("#connectivity-banner")).to_contain_text("Degraded:")
    expect(page.locator("#readonly-banner")).to_have_count(0)
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    expect(row.locator("[data-field=presence]")).to_have_text("degraded")
    expect(row.locator("[data-field=connectivity_reason]")).to_contain_text(re.compile(r"reconnects? in the last"))
    expect(detail.locator("h1 [data-field=presence]")).to_have_text("degraded")
    expect(detail.locator("#connectivity-banner")).to_contain_text("Degraded:")
    shots(page, "degraded")
    assert_not_reloaded(page)
    assert_not_reloaded(listing)
    assert_not_reloaded(detail)
