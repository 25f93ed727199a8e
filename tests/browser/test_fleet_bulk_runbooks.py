"""Issue 15, items 3-5, in a real Chromium against a real stack and real `caisey-agent`s:

- the fleet overview (the first link of the nav) shows each client group's endpoints by
  connectivity and the open sessions with who holds them; an agent that dies appears under
  "Needs attention" as offline, with why, without a reload;
- a bulk run's results are grouped by outcome ("1 same output, 1 failed, 1 waiting offline"),
  the progress bar and groups fill in live, a group opens to its endpoints, the exports download,
  and "Re-run" starts a new run, linked to the first, on the failed endpoint only;
- a runbook written in the console, edited (version 2; version 1 kept), run on one endpoint as
  one batch: its steps succeed and the session's transcript names the version that ran.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import support
from tests.browser.support import assert_not_reloaded, log_in, mark_page, open_session, start_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_overview_is_home_and_live(stack, page, shots):
    expect = support.expect()
    erp = start_agent(stack, "ov-erp01", "erp")
    shop = start_agent(stack, "ov-shop01", "retail")
    shop_id = shop.endpoint_id
    log_in(page, stack)
    open_session(page, erp.endpoint_id, "INC-31 ERP slow")
    nav = page.get_by_role("navigation", name="Main").get_by_role("link")
    expect(nav.first).to_have_text("Overview")
    nav.first.click()
    expect(page.get_by_role("heading", name="Fleet overview", level=1)).to_be_visible()
    retail = page.locator("section.overview-group[data-group=retail]")
    erp_group = page.locator("section.overview-group[data-group=erp]")
    expect(erp_group.locator(".open-sessions")).to_contain_text("ov-erp01")
    expect(erp_group.locator(".open-sessions")).to_contain_text(stack.login["username"])
    expect(erp_group).to_contain_text(f"held by {stack.login['username']} (1)")
    expect(retail.locator(f"tr[data-endpoint='{shop_id}']")).to_have_count(0)  # up: nothing to look at
    shots(page, "fleet")
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)

    shop.kill()  # its socket closes: consoles are told at once
    row = page.locator(f"section.overview-group[data-group=retail] tr[data-endpoint='{shop_id}']")
    expect(row.locator("[data-field=presence]")).to_have_text("offline")
    expect(row).to_contain_text("the agent's connection closed")
    expect(page.locator("section.overview-group[data-group=retail] dd[data-state=offline]")).not_to_have_text("0")
    expect(page.locator("#live-status")).to_contain_text("Fleet updated")
    assert_not_reloaded(page)
    shots(page, "offline")


def test_bulk_results_grouped_by_outcome_and_rerun_of_failures(stack, page, shots):
    expect = support.expect()
    lock = stack.workdir / "bulk-lock"
    start_agent(stack, "bulk01", "retail")
    start_agent(stack, "bulk02", "retail")
    start_agent(stack, "bulk03", "retail", run=False)  # enrolled, never connected: waits offline
    log_in(page, stack)
    page.goto("/?q=bulk0")
    for host in ("bulk01", "bulk02", "bulk03"):
        page.get_by_label(f"Select {host}").check()
    form = page.locator("fieldset.bulk")
    form.get_by_label("Diagnostic or command", exact=True).select_option("shell")
    # Whichever agent runs it first makes the directory and succeeds; the other finds it and fails.
    form.locator("fieldset.params[data-kind=shell]").get_by_label("Command (required)").fill(
        f"mkdir {lock} 2>/dev/null && echo made-it || {{ echo lost-the-race; exit 3; }}"
    )
    form.get_by_label("Reason").fill("INC-44 till check")
    form.get_by_role("button", name="Start bulk run").click()
    expect(page).to_have_url(re.compile(r"/bulk/[0-9a-f-]{36}/$"))
    first_url = page.url
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    mark_page(page)
    summary = page.locator("[data-field=outcome-summary]")
    expect(summary).to_have_text("1 same output, 1 failed, 1 waiting offline")
    expect(page.locator("[data-field=bulk-progress-text]")).to_contain_text("2 of 3")
    expect(page.locator("[data-field=bulk-progress-bar]")).to_have_attribute("value", "2")
    assert_not_reloaded(page)  # progress and groups came live
    failed = page.locator("section.outcome[data-status=failed]")
    expect(failed).to_contain_text("exit code 3")
    expect(failed.locator("pre.output")).to_contain_text("lost-the-race")
    failed.get_by_text("The 1 endpoint").click()
    loser = failed.locator(".outcome-endpoints a")
    expect(loser).to_have_count(1)
    loser_host = loser.inner_text().strip()
    assert loser_host in ("bulk01", "bulk02")
    shots(page, "grouped")

    exported = page.request.get(page.get_by_role("link", name="CSV").get_attribute("href"))
    assert exported.status == 200 and exported.text().count("\n") >= 4 and "lost-the-race" in exported.text()
    as_json = page.request.get(page.get_by_role("link", name="JSON").get_attribute("href")).json()
    assert as_json["summary"] == ["1 same output", "1 failed", "1 waiting offline"]

    lock.rmdir()  # the re-run can now succeed where it failed
    page.get_by_role("button", name="Re-run on the 1 failed, timed-out or undelivered endpoint").click()
    expect(page).to_have_url(re.compile(r"/bulk/[0-9a-f-]{36}/$"))
    assert page.url != first_url
    expect(page.get_by_text(re.compile(r"^Re-run of the failures of"))).to_be_visible()
    expect(page.get_by_role("link", name="an earlier run")).to_have_attribute(
        "href", first_url.removeprefix(stack.base_url)
    )
    expect(page.locator("[data-field=outcome-summary]")).to_have_text("1 same output")
    same = page.locator("section.outcome[data-status=succeeded]")
    expect(same.locator("pre.output")).to_contain_text("made-it")
    same.get_by_text("The 1 endpoint").click()
    expect(same.locator(".outcome-endpoints a")).to_have_text(loser_host)
    shots(page, "rerun")


def test_runbook_written_edited_and_run_on_one_endpoint(stack, page, shots):
    expect = support.expect()
    start_agent(stack, "rb01", "retail")
    log_in(page, stack)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runbooks").click()
    page.get_by_role("link", name="New runbook").click()
    page.get_by_label("Name", exact=True).fill("Till outage")
    page.get_by_label(re.compile(r"^Steps, one per line")).fill("system_summary\nshell command='echo step-one'")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Till outage")
    page.get_by_role("link", name=re.compile(r"^Edit")).click()
    steps = page.get_by_label(re.compile(r"^Steps, one per line"))
    expect(steps).to_have_value(re.compile(r"shell command='echo step-one'"))
    steps.fill("system_summary\nshell command='echo step-two of version 2'")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("version 2")
    expect(page.locator("#rb-versions + ul li")).to_have_count(2)
    shots(page, "runbook")

    page.get_by_label(re.compile(r"^On one endpoint")).select_option(label="rb01 (retail client)")
    page.get_by_label("Reason").fill("INC-50 till frozen")
    page.get_by_role("button", name="Run runbook").click()
    expect(page).to_have_url(support.SESSION_URL)
    summary = support.action_card(page, "system_summary")
    shell = support.action_card(page, "shell")
    expect(summary.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(shell.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(shell).to_contain_text("step-two of version 2")
    expect(page.locator("#transcript")).to_contain_text("runbook.run")
    ran = stack.json(
        "import json; from sessions_app.models import TranscriptEntry;"
        "e = TranscriptEntry.all_tenants.get(kind='runbook.run', session__endpoint__hostname='rb01');"
        "print(json.dumps(e.data))"
    )
    assert ran["name"] == "Till outage" and ran["version"] == 2 and len(ran["steps"]) == 2
    shots(page, "ran")
