"""Helpers for the browser tests: finding Chromium, screenshots, logging in, page checks.

Playwright is imported late (see `expect()`), so that a machine without the package gets a
clear skip (or, where browser tests are required, a clear failure) from the fixtures rather
than an import error at collection.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
from dataclasses import dataclass

from tests.e2e.stack import REPO, wait_for

ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
LOGS = ARTIFACTS / "browser-logs"
LAPTOP = {"width": 1366, "height": 768}
TABLET = {"width": 820, "height": 1180}
TIMEOUT_MS = 30_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
ONLINE = re.compile(r"^\s*(lazy|active)\s*$")

CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/lib/chromium/chromium",
    "/snap/bin/chromium",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/opt/google/chrome/chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)
ON_PATH = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def expect():
    """Playwright's expect (its timeout is set by the `context` fixture)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# --- finding a browser -----------------------------------------------------------------------


def browser_required() -> bool:
    return os.environ.get("CAISEY_BROWSER_REQUIRED", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to launch ($CAISEY_CHROMIUM first), or None and what was looked at."""
    looked = []
    explicit = os.environ.get("CAISEY_CHROMIUM", "").strip()
    if explicit:
        path = shutil.which(explicit) or explicit
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, ""
        looked.append(f"$CAISEY_CHROMIUM={explicit} (not an executable file)")
    for path in CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, ""
    for name in ON_PATH:
        if found := shutil.which(name):
            return found, ""
    looked += [*CANDIDATES, *(f"{n} on PATH" for n in ON_PATH)]
    return None, "no Chromium was found; looked at " + ", ".join(looked)


# --- the stack ---------------------------------------------------------------------------------


def start_agent(stack, name: str, group: str = "erp", *, run: bool = True):
    """Enroll a real agent (and start it unless run=False); wait until it is connected."""
    agent = stack.enroll_agent(stack.port, stack.token("acme", group), name=name)
    if run:
        agent.start()
        wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what=f"{name} connected")
    return agent


def sent_mail(stack) -> list:
    """Every email the stack has sent so far (Django's file backend writes them to
    <data dir>/outbox-mail, one file per connection, messages separated by a line of dashes)."""
    folder = stack.workdir / "outbox-mail"
    messages = []
    for path in sorted(folder.glob("*.log")) if folder.is_dir() else ():
        for raw in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if raw.strip():
                messages.append(email.message_from_bytes(raw, policy=email.policy.default))
    return messages


def mail_to(stack, address: str, *, subject_contains: str = "", timeout: float = 30) -> list:
    """Wait until at least one email to `address` (whose subject contains the text) was sent; all of them."""

    def found():
        return [m for m in sent_mail(stack) if address in str(m["To"]) and subject_contains in str(m["Subject"])]

    return wait_for(found, timeout=timeout, what=f"an email to {address}")


def keep_logs(stack, test: str) -> None:
    """Copy the stack's whole logs next to the screenshots: the printed tails may be too short."""
    folder = LOGS / test
    folder.mkdir(parents=True, exist_ok=True)
    for log in stack.workdir.glob("*.log"):
        shutil.copyfile(log, folder / log.name)
    print(f"stack logs kept in {folder}")


# --- pages --------------------------------------------------------------------------------------


def log_in(page, stack, *, next_path: str = "/") -> None:
    """Log in through the form with the keyboard: type, Tab, type, Enter."""
    page.goto(next_path)
    expect()(page).to_have_url(re.compile(r"/login/"))
    expect()(page.get_by_label("Username")).to_be_focused()  # autofocus
    page.keyboard.type(stack.login["username"])
    page.keyboard.press("Tab")
    expect()(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(stack.login["password"])
    page.keyboard.press("Enter")
    expect()(page).not_to_have_url(re.compile(r"/login/"))


def assert_skip_link(page, where: str, *, control_in_main: bool = True) -> None:
    """On a page just loaded: Tab reaches the skip link first, it shows itself, and Enter moves
    focus to main; then (when main has a control) the next Tab lands inside main."""
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect()(skip).to_be_focused()
    box = skip.bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0, f"{where}: the focused skip link is off screen: {box}"
    page.keyboard.press("Enter")
    expect()(page.locator("main#main")).to_be_focused()
    if control_in_main:
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)"), (
            f"{where}: after the skip link, Tab should land inside the main content"
        )


def endpoint_row(page, hostname: str):
    return page.locator("table.endpoints tbody tr").filter(has=page.get_by_role("link", name=hostname, exact=True))


def action_card(page, kind: str):
    return page.locator("#actions section.action").filter(
        has=page.locator("h3", has_text=re.compile(rf"^\s*{re.escape(kind)}\b"))
    )


SESSION_URL = re.compile(r"/sessions/([0-9a-f-]{36})/$")


def open_session(page, endpoint_id: str, reason: str) -> str:
    """From the endpoint's page: open a session with a reason; the session's id."""
    page.goto(f"/endpoints/{endpoint_id}/")
    page.get_by_label("Reason (ticket, symptom)").fill(reason)
    page.get_by_role("button", name="Open a session").click()
    expect()(page).to_have_url(SESSION_URL)
    expect()(page.get_by_text(reason)).to_be_visible()
    return SESSION_URL.search(page.url).group(1)


def run_shell(page, command: str):
    """On the session page: run a shell command (not run before in this session); its action card."""
    page.get_by_label("Diagnostic or command", exact=True).select_option("shell")
    page.locator("fieldset.params[data-kind=shell]").get_by_label("Command (required)").fill(command)
    page.get_by_role("button", name="Run", exact=True).click()
    card = action_card(page, "shell").filter(has=page.locator("code", has_text=f"command={command}"))
    expect()(card).to_have_count(1)
    return card


def mark_page(page) -> None:
    """Tag the loaded document: the tag is gone if the page reloads or navigates."""
    page.evaluate("() => { window.__caiseyNoReload = true; }")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("() => window.__caiseyNoReload === true"), "the page reloaded; expected a live update"


def assert_no_horizontal_overflow(page, where: str) -> None:
    widths = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " culprits: Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right"
        " > window.innerWidth + 1 && e.parentElement.getBoundingClientRect().right <= window.innerWidth + 1"
        " && !Array.from(function* (a) { while ((a = a.parentElement)) yield a; }(e))"
        ".some(a => ['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)))"
        ".slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
        " + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '')"
        " + ' (right edge ' + Math.round(e.getBoundingClientRect().right) + ' px)'),"
        # Text wider than its box (a long word, a <pre>) is in no element's rectangle: its box says so.
        " spilling: Array.from(document.querySelectorAll('main *')).filter(e => getComputedStyle(e).overflowX"
        " === 'visible' && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0"
        " && e.getBoundingClientRect().left + e.scrollWidth > window.innerWidth + 1).slice(-5)"
        ".map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
        " + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '')"
        " + ': ' + (e.textContent || '').trim().slice(0, 40))})"
    )
    assert widths["scroll"] <= widths["inner"] + 1, (
        f"{page.url}: {where}: the page scrolls sideways ({widths['scroll']} px wide in a {widths['inner']} px "
        f"window); outermost elements past the edge (outside any scroll box): {widths['culprits']}; "
        f"content spilling out of its box: {widths['spilling']}"
    )


CONTROL_INFO = """e => ({
    what: e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.name ? '[name=' + e.name + ']' : ''),
    field: e.tagName !== 'BUTTON' && !['submit', 'button', 'reset', 'image'].includes(e.type),
    labelled: Array.from(e.labels || []).some(l => l.textContent.trim() !== '')
        || (e.getAttribute('aria-label') || '').trim() !== ''
        || (e.getAttribute('aria-labelledby') || '').split(/\\s+/).some(id => {
            const t = id && document.getElementById(id);
            return t && t.textContent.trim() !== '';
        }),
})"""


def assert_controls_named(page, where: str) -> None:
    """Each visible input, select, textarea and button in main has a non-empty accessible name,
    as the browser computes it for screen readers; and each field has it from a label,
    aria-label or aria-labelledby, not from a placeholder alone (gone once one types)."""
    controls = page.locator(
        "main input:not([type=hidden]):visible, main select:visible, main textarea:visible, main button:visible"
    )
    count = controls.count()
    assert count > 0, f"{where}: no form controls found"
    for i in range(count):
        control = controls.nth(i)
        info = control.evaluate(CONTROL_INFO)
        try:
            expect()(control).to_have_accessible_name(re.compile(r"\S"), timeout=2_000)
        except AssertionError:
            raise AssertionError(f"{where}: {info['what']} has no accessible name for screen readers") from None
        assert not info["field"] or info["labelled"], (
            f"{where}: {info['what']} has no <label>, aria-label or aria-labelledby"
        )


@dataclass
class Shots:
    """Screenshots of one test's steps at laptop and tablet width, named <test>-<step>-<width>.png,
    each checked for horizontal overflow (a page that scrolls sideways is not usable there)."""

    test: str

    def __call__(self, page, step: str, *, check_overflow: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        original = page.viewport_size or LAPTOP
        try:
            for label, size in (("laptop", LAPTOP), ("tablet", TABLET)):
                page.set_viewport_size(size)
                page.wait_for_timeout(100)  # a layout pass after the resize
                page.screenshot(path=str(SCREENSHOTS / f"{self.test}-{step}-{label}.png"), full_page=True)
                if check_overflow:
                    assert_no_horizontal_overflow(page, f"{step} at {label} width")
        finally:
            page.set_viewport_size(original)
