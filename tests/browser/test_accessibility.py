"""Accessibility, checked by a real tool: axe-core (tests/browser/axe.py, pinned in
tests/browser/axe/package-lock.json) runs in Chromium on every console page, the public share
page and the end user's approval page, each filled with realistic content from a real stack and
real `caisey-agent` processes (a session with a transcript, a prompt waiting, a bulk run, an
incident, a share link, ...). A page fails on any violation axe rates serious or critical; the
report names the rule, its help and the nodes. Moderate and minor findings are written, with the
rest, to test-artifacts/accessibility/axe-report.json and printed, but do not fail.

Each page is also photographed at laptop (1366x768), tablet (768x1024) and phone (390x844)
widths into test-artifacts/screenshots/a11y-<page>-<width>.png, and must not scroll sideways at
any of them.

The pages are not a hand-kept list: ``test_every_page_route_is_checked_or_excluded_with_a_reason``
walks the URL conf (the tenant-isolation test's route walker) and fails for any route that is
neither visited by the browser test (``VISITS``) nor excluded with a reason (``EXCLUDED``,
``EXCLUDED_PREFIXES``). Exclusions are checked, not trusted: a route excluded as POST-only must
answer GET with 405, a download must not answer with HTML.

See docs/accessibility.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pyotp
import pytest

from tests.browser import axe, support
from tests.browser.support import SCREENSHOTS, log_in, start_agent
from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PHONE = {"width": 390, "height": 844}
TABLET = {"width": 768, "height": 1024}
WIDTHS = (("laptop", support.LAPTOP), ("tablet", TABLET), ("phone", PHONE))
AXE_WIDTHS = ("laptop", "phone")
REPORT = support.ARTIFACTS / "accessibility" / "axe-report.json"
APPROVER = "it-lead@warehouse-client.example"

# --- what is visited, what is not, and why -----------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """One page load: the route's name, a label for the report and screenshots, and its path
    made from the world's ids (``World`` below). ``public``: opened in a browser that never
    signed in (the client's approver, the client reading a share link)."""

    route: str
    label: str
    path: Callable[[dict], str]
    public: bool = False


VISITS: list[Visit] = [
    # Signing in (as nobody) and the console, as a tenant admin who sees every page.
    Visit("login", "login", lambda w: "/login/", public=True),
    Visit("console:overview", "overview", lambda w: "/overview/"),
    Visit("console:endpoint_list", "endpoint-list", lambda w: "/"),
    Visit("console:endpoint_detail", "endpoint-detail", lambda w: f"/endpoints/{w['retail_endpoint']}/"),
    Visit("console:session_list", "session-list", lambda w: "/sessions/"),
    Visit("console:session_detail", "session-transcript", lambda w: f"/sessions/{w['retail_session']}/"),
    Visit("console:session_detail", "session-prompt-waiting", lambda w: f"/sessions/{w['warehouse_session']}/"),
    Visit("console:follow_up_list", "follow-ups", lambda w: "/follow-ups/"),
    Visit("console:bulk_detail", "bulk-run", lambda w: f"/bulk/{w['bulk_run']}/"),
    Visit("console:runbook_list", "runbook-list", lambda w: "/runbooks/"),
    Visit("console:runbook_create", "runbook-new", lambda w: "/runbooks/new"),
    Visit("console:runbook_detail", "runbook-detail", lambda w: f"/runbooks/{w['runbook']}/"),
    Visit("console:runbook_edit", "runbook-edit", lambda w: f"/runbooks/{w['runbook']}/edit"),
    Visit("console:incident_list", "incident-list", lambda w: "/incidents/"),
    Visit("console:incident_detail", "incident-detail", lambda w: f"/incidents/{w['incident']}/"),
    Visit("console:incident_preview", "incident-preview", lambda w: f"/incidents/{w['incident']}/preview"),
    Visit("console:session_review", "session-review", lambda w: f"/sessions/{w['retail_session']}/review/"),
    Visit("console:session_preview", "session-preview", lambda w: f"/sessions/{w['retail_session']}/review/preview"),
    Visit("console:tenant_settings", "tenant-settings", lambda w: "/settings/"),
    Visit("members:list", "members", lambda w: "/members/"),
    Visit("members:tokens", "api-tokens", lambda w: "/members/tokens/"),
    Visit("members:sso", "sso", lambda w: "/members/sso/"),
    Visit("members:security_log", "security-log", lambda w: "/members/security-log/"),
    Visit("audit:sinks", "audit-stream", lambda w: "/audit/"),
    Visit("integrations:webhooks", "webhooks", lambda w: "/members/webhooks/"),
    Visit("integrations:webhook_detail", "webhook-detail", lambda w: f"/members/webhooks/{w['webhook']}/"),
    # The signed-in person's own account (allauth's pages in Caisey's layout).
    Visit("mfa_index", "account-security", lambda w: "/accounts/2fa/"),
    Visit("mfa_list_webauthn", "account-passkeys", lambda w: "/accounts/2fa/webauthn/"),
    Visit("account_reauthenticate", "account-reauthenticate", lambda w: "/accounts/reauthenticate/"),
    Visit("account_change_password", "account-password", lambda w: "/accounts/password/change/"),
    Visit("account_email", "account-email", lambda w: "/accounts/email/"),
    Visit("account_logout", "logout-confirm", lambda w: "/logout/"),
    # The public pages: the client's approver, the client reading a shared record.
    Visit("approval_link", "approval", lambda w: f"/approve/{w['approval_token']}/", public=True),
    Visit("approval_link", "approval-invalid", lambda w: "/approve/apl_not-a-real-token/", public=True),
    Visit("share_view", "share", lambda w: f"/share/{w['share_token']}/", public=True),
    Visit("share_view", "share-invalid", lambda w: "/share/shr_not-a-real-token/", public=True),
]

# Routes that change something: the forms on the visited pages post to them, and each answers
# with a redirect back to a visited page (or, for the states below, a page checked by STATES).
POST_ONLY = "POST-only: a form on a visited page posts here and is sent back to a checked page"
# JSON, CSV, PDF and MSI downloads: no HTML to check.
DOWNLOAD = "a download (JSON, CSV, PDF or MSI), not an HTML page"
FRAGMENT = "an HTML fragment the session page fetches and inserts; checked in place on the session pages"

EXCLUDED: dict[str, str] = {
    "console:session_open": POST_ONLY,
    "console:action_run": POST_ONLY,
    "console:batch_run": POST_ONLY,
    "console:note_add": POST_ONLY,
    "console:follow_up": POST_ONLY,
    "console:session_ticket": POST_ONLY,
    "console:session_close": POST_ONLY,
    "console:action_cancel": POST_ONLY,
    "console:action_resend": POST_ONLY,
    "console:action_wake": POST_ONLY,
    "console:follow_up_request": POST_ONLY,
    "console:prompt_cancel": POST_ONLY,
    "console:prompt_reissue": POST_ONLY,
    "console:prompt_resend": POST_ONLY,
    "console:prompt_escalate": POST_ONLY,
    "console:follow_up_open": POST_ONLY,
    "console:prompt_run_approved": POST_ONLY,
    "console:bulk_start": POST_ONLY,
    "console:bulk_rerun": POST_ONLY,
    "console:runbook_run": POST_ONLY,
    "console:incident_create": POST_ONLY,
    "console:incident_add_session": POST_ONLY,
    "console:incident_remove_session": POST_ONLY,
    "console:incident_status": POST_ONLY,
    "console:incident_ticket": POST_ONLY,
    "console:incident_summary": POST_ONLY,
    "console:incident_share": POST_ONLY,
    "console:review_redact": POST_ONLY,
    "console:review_note": POST_ONLY,
    "console:review_complete": POST_ONLY,
    "console:session_share": POST_ONLY,
    "console:share_link_revoke": POST_ONLY,
    "members:invite": POST_ONLY,
    "members:security": POST_ONLY,
    "members:token_issue": POST_ONLY,
    "members:token_revoke": POST_ONLY,
    "members:token_rotate": POST_ONLY,
    "members:deactivate": POST_ONLY,
    "members:reactivate": POST_ONLY,
    "audit:sink_create": POST_ONLY,
    "audit:sink_enable": POST_ONLY,
    "audit:sink_disable": POST_ONLY,
    "audit:sink_test": POST_ONLY,
    "audit:sink_update": POST_ONLY,
    "audit:sink_delete": POST_ONLY,
    "integrations:webhook_create": POST_ONLY,
    "integrations:webhook_update": POST_ONLY,
    "integrations:webhook_rotate": POST_ONLY,
    "integrations:webhook_enable": POST_ONLY,
    "integrations:webhook_disable": POST_ONLY,
    "integrations:webhook_test": POST_ONLY,
    "integrations:delivery_redeliver": POST_ONLY,
    "integrations:webhook_delete": POST_ONLY,
    "sso_start": POST_ONLY,
    "console:bulk_export_csv": DOWNLOAD,
    "console:bulk_export_json": DOWNLOAD,
    "console:incident_export": DOWNLOAD,
    "console:session_export": DOWNLOAD,
    "console:share_link_export": DOWNLOAD,
    "members:security_log_csv": DOWNLOAD,
    "share_pdf": DOWNLOAD,
    "windows-msi": DOWNLOAD,
    "console:action_fragment": FRAGMENT,
    "console:prompt_fragment": FRAGMENT,
    "logout": "the same view as account_logout (allauth's), which is visited",
    "healthz": "a JSON health check for load balancers",
    "metrics": "Prometheus metrics (text), for the scraper",
    "agent-enroll": "the agents' enrollment API (JSON)",
    "api-schema": "the REST API's OpenAPI schema (YAML/JSON)",
}

# Whole families of routes, by path prefix or namespace.
EXCLUDED_PREFIXES: dict[str, str] = {
    "api/": "the REST API answers JSON, not pages",
    "admin/": "the Django admin: the operator's back office with Django's own templates, not the console",
    "static/": "static files",
    # allauth's other routes: sign-up, e-mail confirmation, password reset by e-mail and social
    # sign-in are switched off or unused in Caisey (no self-service accounts; SSO goes through
    # login/sso/); the rest are steps inside the flows checked above (SECOND_FACTOR): removing or
    # renaming a passkey, deactivating the authenticator, re-authenticating by passkey or code,
    # downloading recovery codes (a text file).
    "accounts/": "allauth's other stages (see the comment above EXCLUDED_PREFIXES)",
}

# Page states reached by submitting a form (no route of their own), checked after the visits.
STATES = ("share-link-created", "approval-approved")

# allauth's second-factor pages, checked in the order a person meets them (route name, label):
# after re-authenticating, the authenticator app's set-up; its recovery codes; new codes; adding a
# passkey; then, signing in again, the login's second step.
SECOND_FACTOR = (
    ("mfa_activate_totp", "account-totp-activate"),
    ("mfa_view_recovery_codes", "account-recovery-codes"),
    ("mfa_generate_recovery_codes", "account-recovery-codes-new"),
    ("mfa_add_webauthn", "account-passkey-add"),
    ("mfa_authenticate", "login-second-factor"),
)


def route_exclusion(route) -> str | None:
    if route.name in EXCLUDED:
        return EXCLUDED[route.name]
    for prefix, why in EXCLUDED_PREFIXES.items():
        if route.route.startswith(prefix) or route.namespace.split(":")[0] == prefix.rstrip("/"):
            return why
    return None


def page_routes():
    from tests.test_tenant_isolation import discover_routes

    return discover_routes()


def test_every_page_route_is_checked_or_excluded_with_a_reason():
    """A route added tomorrow fails here until it is visited by the accessibility test or
    excluded with its reason; and nothing is both, and no visit names a route that is gone."""
    visited = {v.route for v in VISITS} | {name for name, _ in SECOND_FACTOR}
    routes = page_routes()
    names = {r.name for r in routes}
    missing = [
        f"{r.name or '(unnamed)'} ({r.route})" for r in routes if r.name not in visited and route_exclusion(r) is None
    ]
    assert not missing, (
        "routes neither checked by tests/browser/test_accessibility.py nor excluded with a reason: "
        + ", ".join(missing)
        + ". Add a Visit to VISITS (with data in build_world if it needs some), or an entry in EXCLUDED."
    )
    assert not (visited & set(EXCLUDED)), f"both visited and excluded: {visited & set(EXCLUDED)}"
    assert visited <= names, f"VISITS names routes that do not exist: {visited - names}"
    assert set(EXCLUDED) <= names, f"EXCLUDED names routes that do not exist: {set(EXCLUDED) - names}"
    # The console's own namespaces have no blanket exclusion: each of their routes is named above.
    for r in routes:
        if r.namespace in ("console", "members", "audit", "integrations"):
            assert r.name in visited or r.name in EXCLUDED, r.name


# --- the world -------------------------------------------------------------------------------------


def build_world(stack) -> dict:
    """Realistic content through the services and real agents: a retail till whose session ran a
    command and a system summary (with a note, follow-ups, an incident and a share link), and a
    warehouse PC whose shell command waits for its user's approval and was escalated by email to the
    client's approver; a bulk run over both, a runbook, an audit sink, a webhook, an API token."""
    tech = stack.login["username"]
    stack.django(
        "from caisey.actors import Party; from endpoints import services; from endpoints.models import Tenant;"
        "services.client_group_create(actor=Party.OPERATOR, tenant=Tenant.all_tenants.get(slug='acme'),"
        f" name='warehouse client', slug='warehouse', approver_email='{APPROVER}')"
    )
    stack.django(h.set_policy("warehouse", "shell", deadline_s=3600, without_user=True))
    retail = start_agent(stack, "pos-till-01", "retail")
    warehouse = start_agent(stack, "wh-pc-07", "warehouse")
    ids = {"retail_endpoint": retail.endpoint_id, "warehouse_endpoint": warehouse.endpoint_id}

    # The till's session: a command with output, a system summary, a note, two follow-ups.
    ids["retail_session"] = session = stack.json(h.open_session(tech, retail.endpoint_id))
    stack.django(
        h.PRELUDE.format(tech=tech)
        + f"s = SupportSession.all_tenants.get(pk='{session}');"
        + "sessions.session_set_ticket(actor=tech, session=s, ticket='INC-4471')"
    )
    shell = stack.json(h.run(tech, session, "shell", {"command": "echo receipt printer online; uname -s"}))
    summary = stack.json(h.run(tech, session, "system_summary", {}))
    for action in (shell, summary):
        wait_for(lambda a=action: stack.json(h.action_state(a))["status"] == "succeeded", timeout=90, what="action")
    stack.django(
        h.PRELUDE.format(tech=tech)
        + f"s = SupportSession.all_tenants.get(pk='{session}');"
        + "sessions.session_add_note(actor=tech, session=s, text='Printer driver reinstalled; client confirmed.')\n"
        + "from tests import factories\n"
        + "factories.follow_up(s, actor=tech, note='Check the till prints the morning report')\n"
        + "factories.follow_up(s, actor=tech, note='Call the store manager back', due=True)"
    )

    # The warehouse PC: a shell command waits for approval, escalated to the client's approver.
    ids["warehouse_session"] = wh_session = stack.json(h.open_session(tech, warehouse.endpoint_id))
    gated = stack.json(h.run(tech, wh_session, "shell", {"command": "systemctl restart cups"}))
    wait_for(
        lambda: (stack.json(h.prompt_state(gated)) or {}).get("state") == "delivered",
        timeout=60,
        what="the prompt delivered to the endpoint",
    )
    prompt = stack.json(h.prompt_state(gated))["id"]
    stack.django(
        h.PRELUDE.format(tech=tech)
        + f"p = Prompt.all_tenants.get(pk='{prompt}');"
        + f"prompts.prompt_escalate(actor=tech, prompt=p, base_url='{stack.base_url}')"
    )
    body = support.mail_to(stack, APPROVER, subject_contains="Approval requested")[0]
    text = body.get_body(preferencelist=("plain",)).get_content()
    ids["approval_token"] = re.search(r"/approve/([A-Za-z0-9_-]+)/", text).group(1)

    # A bulk run over both, an incident with both sessions, a share link to the till's record,
    # a runbook; and the admin's integrations: an audit sink, a webhook, an API token.
    ids.update(
        stack.json(
            h.PRELUDE.format(tech=tech)
            + "from tests import factories; from endpoints.models import Tenant;"
            + "admin = get_user_model().objects.get(username='acme-admin');"
            + "acme = Tenant.all_tenants.get(slug='acme');"
            + f"eps = list(Endpoint.all_tenants.filter(pk__in=['{retail.endpoint_id}', '{warehouse.endpoint_id}']));"
            + "run = factories.bulk_run(eps, actor=tech, reason='Weekly health check');"
            + f"s = SupportSession.all_tenants.get(pk='{session}');"
            + f"w = SupportSession.all_tenants.get(pk='{wh_session}');"
            + "inc = factories.incident(acme, actor=tech, title='Printing down at two sites', sessions=[s, w]);"
            + "link, token = factories.share_link(actor=tech, session=s, label='Store manager');"
            + "rb = factories.runbook(acme, actor=tech, name='Till will not print');"
            + "factories.audit_sink(acme, actor=admin, name='SIEM syslog');"
            + "hook, _ = factories.webhook(acme, url='https://1.1.1.1/caisey-hook', description='Ticketing');"
            + "factories.api_token(admin, name='PSA integration');"
            + "print(json.dumps({'bulk_run': str(run.pk), 'incident': str(inc.pk), 'share_token': token,"
            + " 'share_link': str(link.pk), 'runbook': str(rb.runbook_id), 'webhook': str(hook.pk)}))"
        )
    )
    wait_for(
        lambda: stack.json(
            "import json; from sessions_app.models import Action;"
            f"print(json.dumps(all(a.status == 'succeeded' for a in Action.all_tenants.filter(bulk_run_id='{ids['bulk_run']}'))))"
        ),
        timeout=90,
        what="the bulk run's actions done",
    )
    return ids


# --- the check ---------------------------------------------------------------------------------------


@dataclass
class Checked:
    label: str
    url: str
    findings: list[axe.Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    version: str = ""


@pytest.fixture(scope="module")
def axe_source() -> str:
    try:
        return axe.install().read_text(encoding="utf-8")
    except axe.Unavailable as exc:
        # Where browser tests are required (CI), a missing axe-core fails the run.
        if support.browser_required():
            pytest.fail(f"the accessibility checks are required here but axe-core is missing: {exc}", pytrace=False)
        pytest.skip(f"accessibility checks skipped: {exc}")


# A page made to fail (no language, an image without text, an unnamed button, an unlabelled field,
# grey on white at 2.3:1), and the same page fixed: the harness must tell them apart.
FAULTY = """<!doctype html><html><head><title>t</title></head><body><main>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><button></button><input type="text">
<p style="color:#aaa;background:#fff">Low contrast</p></main></body></html>"""
FIXED = """<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="A dot"><button>Send</button>
<label for="f">Name</label><input id="f" type="text">
<p style="color:#555;background:#fff">Enough contrast</p></main></body></html>"""


def test_axe_reports_the_faults_of_a_page_made_to_fail_and_passes_it_fixed(browser, axe_source):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content(FAULTY)
        version, found = axe.run(page, axe_source)
        assert version == json.loads((axe.HERE / "package.json").read_text())["dependencies"]["axe-core"]
        rules = {f.rule for f in axe.failing(found)}
        assert {"html-has-lang", "image-alt", "button-name", "label", "color-contrast"} <= rules, rules
        page.set_content(FIXED)
        assert axe.failing(axe.run(page, axe_source)[1]) == []
    finally:
        context.close()


def settle(page) -> None:
    """Wait for the page's own scripts to draw (live updates, relative times) before checking."""
    page.wait_for_load_state("networkidle")


def check(page, checked: Checked, source: str) -> None:
    """At each width: a screenshot, no sideways scrolling; and axe at laptop and phone width (a
    narrow layout hides, stacks and wraps things, and may break what the wide one got right)."""
    settle(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size or support.LAPTOP
    try:
        for width, size in WIDTHS:
            page.set_viewport_size(size)
            page.wait_for_timeout(100)  # a layout pass after the resize
            page.screenshot(path=str(SCREENSHOTS / f"a11y-{checked.label}-{width}.png"), full_page=True)
            try:
                support.assert_no_horizontal_overflow(page, f"at {width} width")
            except AssertionError as exc:
                checked.problems.append(str(exc))
            if width in AXE_WIDTHS:
                checked.version, found = axe.run(page, source, width=width)
                checked.findings += found
    finally:
        page.set_viewport_size(original)


def test_every_page_passes_axe_with_no_serious_or_critical_violation(axe_source, stack, context, outsider):
    # axe_source first: without axe-core no stack is started for nothing.
    world = build_world(stack)
    admin = {**stack.login, "username": "acme-admin"}
    page = context.new_page()
    log_in(page, SimpleNamespace(login=admin))
    public = outsider.new_page()
    results: list[Checked] = []
    unexpected: list[str] = []

    def visit(v: Visit) -> None:
        target = public if v.public else page
        url = v.path(world)
        response = target.goto(url)
        checked = Checked(v.label, url)
        if response is None or response.status >= 500 or "text/html" not in response.headers.get("content-type", ""):
            unexpected.append(
                f"{v.label}: {url} answered {response and response.status} {response and response.headers}"
            )
            return
        check(target, checked, axe_source)
        results.append(checked)

    for v in VISITS:
        if v.route == "account_reauthenticate":
            continue  # visited below, where the flow needs it
        visit(v)
    # Reauthentication: allauth asks for the password again before a security change.
    visit(next(v for v in VISITS if v.route == "account_reauthenticate"))

    # States reached by a form: the share link just created, and the approver's answer.
    page.goto(f"/sessions/{world['retail_session']}/review/")
    page.get_by_label("For (optional)").fill("Regional manager")
    page.get_by_role("button", name="Create share link").click()
    support.expect()(page.get_by_role("heading", name="Share link created", level=1)).to_be_visible()
    results.append(Checked("share-link-created", page.url))
    check(page, results[-1], axe_source)
    public.goto(f"/approve/{world['approval_token']}/")
    public.get_by_role("button", name="Approve", exact=True).click()
    support.expect()(public.get_by_role("heading", name="Approved", level=1)).to_be_visible()
    results.append(Checked("approval-approved", public.url))
    check(public, results[-1], axe_source)

    # The exclusions hold: POST-only routes refuse GET, downloads are not HTML.
    by_name = {r.name: r for r in page_routes()}
    for name, why in EXCLUDED.items():
        if why not in (POST_ONLY, DOWNLOAD) or name in ("windows-msi", "share_pdf", "sso_start"):
            continue
        route = by_name[name]
        url = "/" + route.url_format % {p: world_param(world, p) for p in route.params}
        answer = page.request.get(url, max_redirects=0)
        if why == POST_ONLY and answer.status != 405:
            unexpected.append(f"{name} is excluded as POST-only but GET {url} answered {answer.status}")
        if why == DOWNLOAD and (answer.status != 200 or "text/html" in answer.headers.get("content-type", "")):
            unexpected.append(
                f"{name} is excluded as a download but GET {url} answered {answer.status} "
                f"{answer.headers.get('content-type')}"
            )
    pdf = outsider.request.get(f"/share/{world['share_token']}/pdf")
    if pdf.headers.get("content-type") != "application/pdf":
        unexpected.append(f"share_pdf answered {pdf.status} {pdf.headers.get('content-type')}")

    # The second factor, set up as a person would (the tenant does not require one, so the admin
    # stays signed in throughout), then the second step of signing in, in the public browser.
    def checked_here(target, label: str, path: str) -> None:
        expect(target).to_have_url(re.compile(re.escape(path) + r"(\?|$)"))
        results.append(Checked(label, target.url))
        check(target, results[-1], axe_source)

    expect = support.expect()
    labels = dict(SECOND_FACTOR)
    page.goto("/accounts/2fa/totp/activate/")
    expect(page.get_by_role("heading", name="Confirm Access")).to_be_visible()  # re-authentication first
    page.get_by_label("Password").fill(admin["password"])
    page.get_by_role("button", name="Confirm").click()
    checked_here(page, labels["mfa_activate_totp"], "/accounts/2fa/totp/activate/")
    secret = page.locator("#authenticator_secret").input_value()
    page.get_by_label("Authenticator code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Activate").click()
    checked_here(page, labels["mfa_view_recovery_codes"], "/accounts/2fa/recovery-codes/")
    page.goto("/accounts/2fa/recovery-codes/generate/")
    checked_here(page, labels["mfa_generate_recovery_codes"], "/accounts/2fa/recovery-codes/generate/")
    page.goto("/accounts/2fa/webauthn/add/")
    checked_here(page, labels["mfa_add_webauthn"], "/accounts/2fa/webauthn/add/")
    public.goto("/login/")
    public.get_by_label("Username").fill(admin["username"])
    public.get_by_label("Password").fill(admin["password"])
    public.get_by_role("button", name="Log in", exact=True).click()
    checked_here(public, labels["mfa_authenticate"], "/accounts/2fa/authenticate/")

    write_report(results)
    serious = [(c, axe.failing(c.findings)) for c in results]
    lines = []
    for c, found in serious:
        if found:
            lines.append(f"{c.label} ({c.url}):")
            lines += [f.describe() for f in found]
    for c in results:
        lines += [f"{c.label}: {p}" for p in c.problems]
    lines += unexpected
    assert len(results) == len(VISITS) + len(STATES) + len(SECOND_FACTOR), [c.label for c in results]
    assert not lines, "accessibility problems (axe impact serious or critical, sideways scrolling):\n" + "\n".join(
        lines
    )


PARAMS = {
    "endpoint_id": "retail_endpoint",
    "session_id": "retail_session",
    "run_id": "bulk_run",
    "incident_id": "incident",
    "runbook_id": "runbook",
    "webhook_id": "webhook",
    "link_id": "share_link",
}


def world_param(world: dict, name: str):
    """A URL parameter for the exclusion checks; ids that only need to be well-formed (a 405 or a
    404 both answer before a lookup matters) are made up."""
    if name in PARAMS:
        return world[PARAMS[name]]
    if name in ("action_id", "prompt_id", "follow_up_id"):
        return "00000000-0000-4000-8000-000000000000"
    return 1


def write_report(results: list[Checked]) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = [
        {
            "page": c.label,
            "url": c.url,
            "axe": c.version,
            "violations": [f.__dict__ for f in c.findings],
            "problems": c.problems,
        }
        for c in results
    ]
    REPORT.write_text(json.dumps(data, indent=2), encoding="utf-8")
    for c in results:
        for f in c.findings:
            print(f"{c.label} ({f.width}): [{f.impact}] {f.rule} x{len(f.targets)}")
    print(f"axe report: {REPORT}")
