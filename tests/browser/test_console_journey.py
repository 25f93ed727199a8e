"""A technician's journey through the console in a real Chromium, against a real stack and
real `caisey-agent` processes: log in, find the endpoint, watch its presence change live, open
a session, run a diagnostic, run a shell command the end user approves on the endpoint, and
see an offline endpoint's session turn read-only. Plus the basics of keyboard use, screen
reader labels and tablet layout. Screenshots land in test-artifacts/screenshots/.

The tests share one stack per module but not state: each enrolls agents of its own, so they
pass in any order and on any xdist worker.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import support
from tests.browser.support import (
    ONLINE,
    TABLET,
    action_card,
    assert_controls_named,
    assert_no_horizontal_overflow,
    assert_not_reloaded,
    endpoint_row,
    log_in,
    mark_page,
    start_agent,
)
from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_log_in_find_endpoint_watch_presence_live(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "app01", "erp")
    start_agent(stack, "pos01", "retail", run=False)  # enrolled, never connected

    page.goto("/login/")
    shots(page, "login")
    log_in(page, stack)
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()

    app01 = endpoint_row(page, "app01")
    expect(app01.locator("[data-field=presence]")).to_have_text(ONLINE)
    expect(endpoint_row(page, "pos01").locator("[data-field=presence]")).to_have_text("offline")
    shots(page, "endpoint-list")

    # By client group.
    page.get_by_label("Client group").select_option("erp")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"group=erp"))
    expect(page.get_by_label("Client group")).to_have_value("erp")
    expect(app01).to_have_count(1)
    expect(endpoint_row(page, "pos01")).to_have_count(0)
    page.get_by_label("Client group").select_option("retail")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(endpoint_row(page, "pos01")).to_have_count(1)
    expect(app01).to_have_count(0)

    # By search, across all client groups (type, Enter).
    page.get_by_label("Client group").select_option("")
    search = page.get_by_label("Hostname or tag")
    search.fill("app0")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"q=app0"))
    expect(app01).to_have_count(1)
    expect(endpoint_row(page, "pos01")).to_have_count(0)
    expect(app01.locator("[data-field=presence]")).to_have_text(ONLINE)
    shots(page, "endpoint-search")

    # The agent dies: the list says so by itself, without a reload.
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    agent.kill()
    expect(app01.locator("[data-field=presence]")).to_have_text("offline")
    expect(app01.locator("[data-field=presence]")).to_have_class(re.compile(r"\bpresence-offline\b"))
    assert_not_reloaded(page)

    # And comes back.
    agent.start()
    expect(app01.locator("[data-field=presence]")).to_have_text(ONLINE)
    assert_not_reloaded(page)


def test_session_diagnostic_approved_shell_read_only(stack, context, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "db01", "erp")
    log_in(page, stack)

    # The endpoint page, from the list.
    page.get_by_role("link", name="db01", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(r"^db01"), level=1)).to_be_visible()
    expect(page.locator("h1 [data-field=presence]")).to_have_text(ONLINE)
    expect(page.get_by_role("heading", name="Machine context")).to_be_visible()
    shots(page, "endpoint-detail")

    # Open a session with a reason.
    page.get_by_label("Reason (ticket, symptom)").fill("INC-2041 ERP slow for the warehouse")
    page.get_by_role("button", name="Open a session").click()
    expect(page).to_have_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    expect(page.get_by_role("heading", name=re.compile(r"^Session on db01"), level=1)).to_be_visible()
    expect(page.get_by_text("INC-2041 ERP slow for the warehouse")).to_be_visible()
    expect(page.locator("#readonly-banner")).to_have_count(0)
    session_url = page.url
    shots(page, "session-open")

    # A second tab on the same session (a colleague watching): it must follow along live.
    watcher = context.new_page()
    watcher.goto(session_url)
    expect(watcher.locator("body")).to_have_attribute("data-live", "connected")
    expect(watcher.locator("#no-actions")).to_be_visible()
    mark_page(watcher)

    # A diagnostic from the kind picker: only the chosen kind's parameters show.
    kind = page.get_by_label("Diagnostic or command", exact=True)
    kind.select_option(label="TCP connect test")
    tcp = page.locator("fieldset.params[data-kind=tcp_connect]")
    expect(tcp).to_be_visible()
    expect(page.locator("fieldset.params[data-kind=shell]")).to_be_hidden()
    expect(page.locator("fieldset.params:visible")).to_have_count(1)
    tcp.get_by_label("Host (required)").fill("127.0.0.1")
    tcp.get_by_label("Port (required)").fill(str(stack.port))
    page.get_by_role("button", name="Run", exact=True).click()

    card = action_card(page, "tcp_connect")
    expect(card.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(card).to_contain_text("connected to 127.0.0.1")
    # The watching tab got the new card, its progress and its result without reloading.
    watched = action_card(watcher, "tcp_connect")
    expect(watched.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(watched).to_contain_text("connected to 127.0.0.1")
    expect(watcher.locator("#no-actions")).to_have_count(0)
    assert_not_reloaded(watcher)
    shots(page, "session-diagnostic")

    # A shell command: erp's policy wants the end user's approval first.
    kind.select_option("shell")
    expect(page.locator("fieldset.params[data-kind=shell]")).to_be_visible()
    expect(tcp).to_be_hidden()
    page.locator("fieldset.params[data-kind=shell]").get_by_label("Command (required)").fill("echo caisey-$((6*7))")
    page.get_by_role("button", name="Run", exact=True).click()
    shell = action_card(page, "shell")
    expect(shell.locator("[data-field=status]")).to_have_text("Awaiting approval")
    prompt = page.locator("#prompts .prompt")
    expect(prompt).to_have_count(1)
    expect(prompt).to_contain_text("echo caisey-$((6*7))")
    # Pending, then delivered to the endpoint: the page follows the ledger by itself.
    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-(pending|delivered)\b"))
    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-delivered\b"))
    shots(page, "session-prompt-delivered")

    # The end user approves on the endpoint, with the agent's command line.
    action_id = shell.get_attribute("data-action")
    prompt_id = stack.json(h.prompt_state(action_id))["id"]
    assert prompt.get_attribute("data-prompt") == prompt_id
    decided = agent.prompts("approve", prompt_id[:8])
    assert decided.returncode == 0, decided.stdout + decided.stderr

    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-approved\b"))
    expect(prompt.locator("[data-field=state]")).to_have_text("Approved")
    expect(prompt).to_contain_text("decided by")
    expect(shell.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(shell.locator("[data-field=output]")).to_contain_text("caisey-42")
    expect(action_card(watcher, "shell").locator("[data-field=output]")).to_contain_text("caisey-42")
    expect(page.locator("#transcript")).to_contain_text("prompt")
    shots(page, "session-approved")

    # The endpoint goes away: the presence badge changes live, and the reloaded page is read-only.
    mark_page(page)
    agent.kill()
    expect(page.locator("h1 [data-field=presence]")).to_have_text("offline")
    assert_not_reloaded(page)
    page.reload()
    banner = page.locator("#readonly-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Read-only")
    expect(page.get_by_role("heading", name="Queue an action for when it returns")).to_be_visible()
    expect(page.get_by_role("button", name="Queue", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Run", exact=True)).to_have_count(0)
    # What ran before is still there to read.
    expect(action_card(page, "shell").locator("[data-field=output]")).to_contain_text("caisey-42")
    shots(page, "session-read-only")


def test_keyboard_labels_and_tablet_layout(stack, page, shots):
    expect = support.expect()
    agent = start_agent(stack, "kb01", "erp")
    session_id = stack.json(h.open_session(stack.login["username"], agent.endpoint_id))
    summary = stack.json(h.run(stack.login["username"], session_id, "system_summary", {}))
    wait_for(
        lambda: stack.json(h.action_state(summary))["status"] == "succeeded", timeout=60, what="system summary done"
    )
    log_in(page, stack, next_path=f"/sessions/{session_id}/")
    expect(page.get_by_role("heading", name=re.compile(r"^Session on kb01"), level=1)).to_be_visible()

    # On the session page and the endpoint list: Tab reaches the skip link first, it shows
    # itself, and Enter moves focus to the main content.
    for path in (f"/sessions/{session_id}/", "/"):
        page.goto(path)
        expect(page.locator("body")).to_have_attribute("data-live", "connected")
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        box = skip.bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, f"{path}: the focused skip link is off screen: {box}"
        page.keyboard.press("Enter")
        expect(page.locator("main#main")).to_be_focused()
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)"), (
            f"{path}: after the skip link, Tab should land inside the main content"
        )
    page.goto(f"/sessions/{session_id}/")

    # Every form control on the session page has an accessible name, whichever kind is chosen.
    kind = page.get_by_label("Diagnostic or command", exact=True)
    for value in kind.locator("option").evaluate_all("opts => opts.map(o => o.value)"):
        kind.select_option(value)
        assert_controls_named(page, f"session page, kind {value}")
    for summary_el in page.locator("details > summary").all():  # open the folded forms too
        summary_el.click()
    assert_controls_named(page, "session page, folded forms open")

    # The endpoint list and its bulk form, and the endpoint page.
    page.goto("/")
    assert_controls_named(page, "endpoint list")
    page.goto(f"/endpoints/{agent.endpoint_id}/")
    assert_controls_named(page, "endpoint page")

    # No sideways scrolling at tablet width on the endpoint list and the session page.
    page.set_viewport_size(TABLET)
    for path in ("/", f"/sessions/{session_id}/"):
        page.goto(path)
        expect(page.locator("main#main")).to_be_visible()
        assert_no_horizontal_overflow(page, "tablet width")
    shots(page, "session-with-output")
