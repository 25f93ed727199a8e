"""Escalation by email, in a real Chromium against a real stack and a real `caisey-agent`: the
client's policy wants approval for shell commands and names a designated approver; nobody
answers on the endpoint, so the technician escalates. The approver gets an email with a one-time
link, opens it in a browser that never logged in to Caisey, approves, and the technician's
session page follows: the prompt is approved and the command runs on the endpoint. The link then
no longer works. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import support
from tests.browser.support import action_card, assert_skip_link, log_in, mail_to, open_session, run_shell, start_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

APPROVER = "it-lead@warehouse-client.example"
LINK = re.compile(r"https?://\S+/approve/[A-Za-z0-9_-]+/")


@pytest.fixture(scope="module")
def escalating_group(stack) -> str:
    """A client group whose policy gates shell commands, allows escalation, and has an approver; the
    approver may decide with nobody logged in at the endpoint (a test machine has no desktop session),
    so escalation is open at once."""
    stack.django(
        "from caisey.actors import Party; from endpoints import services; from endpoints.models import Tenant;"
        "services.client_group_create(actor=Party.OPERATOR, tenant=Tenant.all_tenants.get(slug='acme'),"
        f" name='warehouse client', slug='warehouse', approver_email='{APPROVER}')"
    )
    stack.django(
        "from endpoints.models import ApprovalPolicy, ClientGroup;"
        "g = ClientGroup.all_tenants.get(slug='warehouse');"
        "ApprovalPolicy.all_tenants.update_or_create(client_group=g, defaults=dict(tenant_id=g.tenant_id,"
        " requires='shell', response_deadline_s=600, allow_escalation=True, allow_without_user=True))"
    )
    return "warehouse"


def test_escalate_prompt_approver_approves_by_email_link(stack, page, outsider, shots, escalating_group):
    expect = support.expect()
    agent = start_agent(stack, "wh01", escalating_group)
    log_in(page, stack)
    open_session(page, agent.endpoint_id, "INC-3107 label printer queue stuck")

    # The technician asks for a shell command: it waits for the end user's approval.
    command = "echo escalated-$((6*7))"
    shell = run_shell(page, command)
    expect(shell.locator("[data-field=status]")).to_have_text("Awaiting approval")
    prompt = page.locator("#prompts .prompt")
    expect(prompt).to_have_count(1)
    expect(prompt).to_contain_text(command)
    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-(pending|delivered)\b"))
    # The endpoint holds it (its user could answer there); the page follows the ledger.
    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-delivered\b"))
    shots(page, "prompt-waiting")

    # Nobody answers on the endpoint: escalate to the client's designated approver.
    assert not any(APPROVER in str(m["To"]) for m in support.sent_mail(stack)), "no email before escalating"
    prompt.get_by_role("button", name="Escalate to the client's approver").click()
    expect(page.locator(".messages")).to_contain_text("Approval link sent to the client's designated approver")
    prompt = page.locator("#prompts .prompt")
    # Relative, with the absolute time on hover (issue 15 item 6).
    expect(prompt.locator(".meta")).to_contain_text(re.compile(r"escalated (just now|\d+ s ago)"))
    expect(prompt.locator(".meta time").last).to_have_attribute("title", re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(prompt.locator("[data-field=state]")).to_have_class(re.compile(r"\bstatus-delivered\b"))
    expect(page.locator("#transcript")).to_contain_text("prompt.escalated")
    shots(page, "prompt-escalated")

    # The approver's email: one message, about this request, with a link to this server.
    mails = mail_to(stack, APPROVER, subject_contains="Approval requested")
    assert len(mails) == 1, [m["Subject"] for m in mails]
    body = mails[0].get_body(preferencelist=("plain",)).get_content()
    assert command in body and "wh01" in body, body
    found = LINK.findall(body)
    assert len(found) == 1, f"expected one approval link in the email:\n{body}"
    url = found[0]
    assert url.startswith(stack.base_url + "/approve/"), url

    # The approver opens it in their own browser: no Caisey account, no cookies of the technician's.
    approver = outsider.new_page()
    response = approver.goto(url)
    assert response.status == 200
    assert not any(c["name"] == "sessionid" for c in outsider.cookies())
    expect(approver.get_by_role("heading", name="Approval requested", level=1)).to_be_visible()
    expect(approver.locator("main")).to_contain_text("wh01 (warehouse client)")
    expect(approver.locator("main")).to_contain_text(command)
    expect(approver.locator("main")).to_contain_text("acme-tech")
    shots(approver, "approver-page")
    # The page works from the keyboard: Tab, the skip link, Enter, focus in the main content.
    assert_skip_link(approver, "approval page")
    approver.get_by_role("button", name="Approve", exact=True).click()
    expect(approver.get_by_role("heading", name="Approved", level=1)).to_be_visible()
    expect(approver.locator("main")).to_contain_text("the technician can proceed")
    shots(approver, "approver-approved")

    # The technician's page follows by itself: approved by the approver, and the command ran.
    state = page.locator("#prompts .prompt [data-field=state]")
    expect(state).to_have_class(re.compile(r"\bstatus-approved\b"))
    expect(state).to_have_text("Approved")
    expect(page.locator("#prompts .prompt")).to_contain_text(f"decided by approver:{APPROVER}")
    shell = action_card(page, "shell")
    expect(shell.locator("[data-field=status]")).to_have_text("Succeeded")
    expect(shell.locator("[data-field=output]")).to_contain_text("escalated-42")
    expect(page.locator("#prompts .prompt")).to_contain_text(f"approved by {APPROVER}")
    shots(page, "prompt-approved-ran")

    # The link works once: opened again, it is the plain "not valid" page, and it decides nothing.
    response = approver.goto(url)
    assert response.status == 404
    expect(approver.get_by_role("heading", name="This link is not valid", level=1)).to_be_visible()
    expect(approver.get_by_role("button", name="Approve")).to_have_count(0)
    shots(approver, "approver-link-used")
    assert_skip_link(approver, "approval link used", control_in_main=False)
