"""The second factor in a real Chromium against the real stack: a technician of a tenant that
requires one enrols an authenticator app (codes computed with pyotp) or a passkey (Chromium's
virtual authenticator, through the DevTools protocol) before reaching the console, then logs
in with it.

WebAuthn needs a secure context: these pages are opened at http://localhost (not 127.0.0.1),
which browsers and python-fido2 treat as one."""

from __future__ import annotations

import re
import time

import pyotp
import pytest

from tests.browser import support
from tests.browser.support import LAPTOP, TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PASSWORD = "e2e-password-1"


@pytest.fixture(scope="module")
def strict(stack):
    """A tenant that requires a second factor (with one endpoint-less client group), and its URL
    at localhost."""
    stack.seed(tenant="strict", group="hq", mfa_required=True)
    stack.localhost_url = f"http://localhost:{stack.port}"
    return stack


@pytest.fixture
def local_page(browser, strict, request):
    support.expect().set_options(timeout=TIMEOUT_MS)
    ctx = browser.new_context(viewport=LAPTOP, base_url=strict.localhost_url, locale="en-GB")
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx.new_page()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        support.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(ctx.pages):
            p.screenshot(path=str(support.SCREENSHOTS / f"{request.node.name}-FAILED-{i}.png"), full_page=True)
        support.keep_logs(strict, request.node.name)
    ctx.close()


def new_member(stack, username: str) -> None:
    stack.django(
        "from endpoints import services; from endpoints.models import Role, Tenant;"
        f"services.membership_create(tenant=Tenant.all_tenants.get(slug='strict'), username='{username}',"
        f" password='{PASSWORD}', role=Role.TECHNICIAN)"
    )


def password_step(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()


def confirm_password(page) -> None:
    support.expect()(page.get_by_role("heading", name="Confirm Access")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()


def log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    support.expect()(page).to_have_url(re.compile(r"/login/"))


def fresh_code(secret: str, used: set[str]) -> str:
    """A current code not used before (allauth refuses a code twice): wait for the next period."""
    totp = pyotp.TOTP(secret)
    deadline = time.monotonic() + 65
    while (code := totp.now()) in used:
        assert time.monotonic() < deadline, "no new TOTP code within two periods"
        time.sleep(1)
    used.add(code)
    return code


def test_totp_enrolment_before_the_console_then_login_with_a_code(strict, local_page, shots):
    expect, page = support.expect(), local_page
    new_member(strict, "strict-totp")
    password_step(page, "strict-totp")
    # Signed in with the password, but the tenant requires a second factor: enrol first.
    expect(page).to_have_url(re.compile(r"/accounts/2fa/\?next="))
    expect(page.get_by_role("alert")).to_contain_text("requires a second factor")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/"))  # still no console
    shots(page, "enrol-required")

    page.goto("/accounts/2fa/totp/activate/")
    confirm_password(page)  # allauth asks for the password again before adding a factor
    secret = page.locator("#authenticator_secret").input_value()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    used: set[str] = set()
    page.get_by_label("Authenticator code").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Activate").click()
    expect(page).to_have_url(re.compile(r"/accounts/2fa/recovery-codes/"))
    shots(page, "recovery-codes")
    page.goto("/")
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()

    log_out(page)
    password_step(page, "strict-totp")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.goto("/")  # the password alone signs nobody in: the console sends them back to the code
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.get_by_label("Code").fill("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_text("Incorrect code")).to_be_visible()
    page.get_by_label("Code").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()


def add_virtual_authenticator(page) -> tuple:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    result = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, result["authenticatorId"]


def test_passkey_registered_and_used_through_the_virtual_authenticator(strict, local_page, shots):
    expect, page = support.expect(), local_page
    new_member(strict, "strict-key")
    cdp, authenticator = add_virtual_authenticator(page)
    password_step(page, "strict-key")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/\?next="))

    page.goto("/accounts/2fa/webauthn/add/")
    confirm_password(page)
    page.get_by_label("Name").fill("laptop key")
    page.get_by_label("Passwordless").check()
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page).to_have_url(re.compile(r"/accounts/2fa/recovery-codes/"))
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"]
    page.goto("/")
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    shots(page, "after-passkey")

    # As a second factor after the password.
    log_out(page)
    password_step(page, "strict-key")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    sign_count = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"][0]["signCount"]
    assert sign_count >= 1

    # And alone, as a passkey login (no username, no password).
    log_out(page)
    page.get_by_role("button", name="Log in with a passkey").click()
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    expect(page.locator("header .who").get_by_text("strict-key", exact=True)).to_be_visible()


# --- single sign-on: OpenID Connect against a real provider ------------------------------------------


@pytest.fixture(scope="module")
def identity_provider(strict):
    """panva's oidc-provider on loopback, with a client for tenant "ssoco" and two people: Jane
    (group helpdesk, mapped to technician) and Mallory (another company's domain, no group)."""
    from tests.oidc import provider

    strict.seed(tenant="ssoco", group="branch", mfa_required=False)
    callback = f"{strict.localhost_url}/accounts/oidc/tenant-ssoco/login/callback/"
    accounts = {
        "jane": {"email": "jane@ssoco.test", "email_verified": True, "groups": ["helpdesk"], "name": "Jane Doe"},
        "mallory": {"email": "mallory@elsewhere.test", "email_verified": True, "groups": [], "name": "Mallory"},
    }
    try:
        with provider.running(
            client_id="caisey-ssoco", client_secret="test-client-secret", redirect_uris=[callback], accounts=accounts
        ) as issuer:
            strict.django(
                "from caisey.actors import Party; from endpoints import people; from endpoints.models import Tenant;"
                "people.tenant_sso_configure(actor=Party.OPERATOR, tenant=Tenant.all_tenants.get(slug='ssoco'),"
                f" issuer='{issuer}', client_id='caisey-ssoco', secret='test-client-secret',"
                " allowed_domains='ssoco.test', role_mapping={'helpdesk': 'technician', 'it-leads': 'admin'})"
            )
            yield issuer
    except provider.Unavailable as exc:
        if support.browser_required():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


def sso_sign_in(page, login: str) -> None:
    page.goto("/login/")
    page.get_by_label("Organisation").fill("ssoco")
    page.get_by_role("button", name="Sign in with your organisation").click()
    # The provider's own pages (oidc-provider's development login and consent forms).
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any-password")
    page.locator("button[type=submit]").click()
    page.get_by_role("button", name="Continue").click()


def membership_of(stack, email: str):
    return stack.json(
        "import json; from endpoints.models import Membership;"
        f"m = Membership.all_tenants.filter(user__email='{email}').select_related('tenant').first();"
        "print(json.dumps(m and {'tenant': m.tenant.slug, 'role': m.role}))"
    )


def test_oidc_sign_in_creates_the_membership_just_in_time(strict, identity_provider, local_page, shots):
    expect, page = support.expect(), local_page
    assert membership_of(strict, "jane@ssoco.test") is None
    sso_sign_in(page, "jane")
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    expect(page.locator("header .who")).to_contain_text("ssoco MSP")
    assert membership_of(strict, "jane@ssoco.test") == {"tenant": "ssoco", "role": "technician"}
    shots(page, "sso-signed-in")

    # Signing in again reuses the account and membership.
    log_out(page)
    page.goto("/login/")
    page.get_by_label("Organisation").fill("ssoco")
    page.get_by_role("button", name="Sign in with your organisation").click()
    consent = page.get_by_role("button", name="Continue")
    if page.locator("input[name=login]").count():  # the provider's own session may have ended
        sso_sign_in(page, "jane")
    elif consent.count():
        consent.click()
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    count = strict.json(
        "import json; from endpoints.models import Membership;"
        "print(Membership.all_tenants.filter(user__email='jane@ssoco.test').count())"
    )
    assert count == 1


def test_oidc_refuses_someone_the_tenant_does_not_allow(strict, identity_provider, browser):
    expect = support.expect()
    ctx = browser.new_context(viewport=LAPTOP, base_url=strict.localhost_url, locale="en-GB")
    try:
        page = ctx.new_page()
        sso_sign_in(page, "mallory")
        expect(page).to_have_url(re.compile(r"/login/\?sso=refused"))
        expect(page.get_by_role("alert")).to_contain_text("does not give you access")
        assert membership_of(strict, "mallory@elsewhere.test") is None
    finally:
        ctx.close()


# --- step-up before a shell command --------------------------------------------------------------


def queue_shell(page, command: str) -> None:
    """The endpoint is offline (its agent never runs): the session page queues the command."""
    page.get_by_label("Diagnostic or command", exact=True).select_option("shell")
    page.locator("fieldset.params[data-kind=shell]").get_by_label("Command (required)").fill(command)
    page.get_by_role("button", name="Queue", exact=True).click()


def test_step_up_prompt_before_a_shell_command(strict, local_page, shots):
    """A technician signed in with an authenticator app; past the tenant's window (20 s here) a
    shell command first asks for a code, then runs, and the transcript records the check."""
    expect, page = support.expect(), local_page
    strict.django(
        "from endpoints.models import Tenant; Tenant.all_tenants.filter(slug='strict').update(step_up_window_s=20)"
    )
    new_member(strict, "strict-stepup")
    secret = strict.django(
        "from django.contrib.auth import get_user_model;"
        " from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret;"
        " s = generate_totp_secret(); TOTP.activate(get_user_model().objects.get(username='strict-stepup'), s); print(s)"
    ).strip()
    strict.enroll_agent(strict.port, strict.token("strict", "hq"), name="stepup-pc")  # enrolled, not running
    endpoint_id = strict.json(
        "import json; from endpoints.models import Endpoint;"
        " print(json.dumps(str(Endpoint.all_tenants.get(hostname='stepup-pc').pk)))"
    )
    used: set[str] = set()
    password_step(page, "strict-stepup")
    page.get_by_label("Code").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Sign In").click()
    signed_in_at = time.monotonic()
    expect(page.get_by_role("heading", name="Endpoints", level=1)).to_be_visible()
    session_id = support.open_session(page, endpoint_id, "INC-42 printer queue stuck")
    queue_shell(page, "hostname")  # within the window: queued at once
    expect(support.action_card(page, "shell")).to_have_count(1)

    time.sleep(max(0.0, 21 - (time.monotonic() - signed_in_at)))
    queue_shell(page, "whoami")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/reauthenticate/"))
    expect(page.get_by_role("alert")).to_contain_text("Confirm it is you")
    shots(page, "step-up")
    page.get_by_label("Code").fill(fresh_code(secret, used))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session_id}/$"))
    queue_shell(page, "whoami")
    expect(support.action_card(page, "shell")).to_have_count(2)

    checks = strict.json(
        "import json; from sessions_app.models import TranscriptEntry;"
        f" print(json.dumps([e.data for e in TranscriptEntry.all_tenants.filter(session_id='{session_id}',"
        " kind='identity.step_up').order_by('index')]))"
    )
    assert [(c["method"], c["for"]) for c in checks] == [("mfa", "shell"), ("mfa", "shell")]
    assert checks[1]["at"] - checks[0]["at"] >= 20  # the second is the re-authentication
