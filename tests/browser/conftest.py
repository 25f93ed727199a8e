"""Browser tests: a real Caisey stack (tests/e2e/stack.py) driven by Playwright in Chromium.

Chromium is never downloaded (`playwright install` cannot reach its CDN here, and a user's
machine may have its own): the fixture launches the first Chromium it finds, $CAISEY_CHROMIUM
first. Without one the tests skip, unless CAISEY_BROWSER_REQUIRED is set (CI), where they fail.

Screenshots of the main pages, at laptop and tablet widths, go to test-artifacts/screenshots/
at the repository root, named <test>-<step>-<width>.png; a failing test adds <test>-FAILED.png
and keeps the stack's logs in test-artifacts/browser-logs/<test>/.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import helpers as h
from tests.e2e.stack import REPO, Stack, wait_for

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
LOGS = REPO / "test-artifacts" / "browser-logs"
LAPTOP = {"width": 1366, "height": 768}
TABLET = {"width": 820, "height": 1180}
TIMEOUT_MS = 30_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]

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


def _required() -> bool:
    return os.environ.get("CAISEY_BROWSER_REQUIRED", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    """Fail where a browser is required (CI), skip elsewhere; either way say why."""
    if _required():
        pytest.fail(f"browser tests are required here (CAISEY_BROWSER_REQUIRED is set) but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason} (set CAISEY_CHROMIUM to a Chromium or Chrome binary to run them)")


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to launch, and what was looked at (for the skip or failure message)."""
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


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path, why = find_chromium()
    if path is None:
        _unavailable(why)
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable):
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed ({exc}); pip install -e '.[test]'")
    pw = sync_playwright().start()
    try:
        try:
            browser = pw.chromium.launch(executable_path=chromium_executable, headless=True, args=LAUNCH_ARGS,
                                         timeout=60_000)
        except PlaywrightError as exc:
            _unavailable(f"{chromium_executable} did not start: {str(exc).strip().splitlines()[0]}")
        yield browser
        browser.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def stack(redis_server):
    """One stack for a test module (Daphne and a Celery worker with beat), seeded with a
    technician, the client groups `erp` (approval required for shell commands) and `retail`."""
    s = Stack()
    try:
        s.port = s.start_server()
        s.worker = s.start_worker()
        s.login = s.seed()
        s.django(
            "from endpoints import services; from endpoints.models import Tenant;"
            "services.client_group_create(actor='e2e', tenant=Tenant.all_tenants.get(slug='acme'),"
            " name='retail client', slug='retail')"
        )
        s.django(h.set_policy("erp", "shell", deadline_s=600))
        s.base_url = f"http://127.0.0.1:{s.port}"
        yield s
    finally:
        s.cleanup()


def start_agent(stack, name: str, group: str = "erp", *, run: bool = True):
    """Enroll a real agent (and start it unless run=False); wait until it is connected."""
    agent = stack.enroll_agent(stack.port, stack.token("acme", group), name=name)
    if run:
        agent.start()
        wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what=f"{name} connected")
    return agent


@pytest.fixture
def context(browser, stack, request):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ctx = browser.new_context(viewport=LAPTOP, base_url=stack.base_url, locale="en-GB")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    yield ctx
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(ctx.pages):
            try:
                p.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-FAILED{'-%d' % i if i else ''}.png"),
                             full_page=True)
            except Exception as exc:  # the page may be gone; the stack logs matter more
                print(f"no failure screenshot of page {i}: {exc}")
        keep_logs(stack, request.node.name)
        print(stack.logs())
    ctx.close()


def keep_logs(stack, test: str) -> None:
    """Copy the stack's whole logs next to the screenshots: the printed tails may be too short."""
    folder = LOGS / test
    folder.mkdir(parents=True, exist_ok=True)
    for log in stack.workdir.glob("*.log"):
        shutil.copyfile(log, folder / log.name)
    for log in stack.workdir.glob("*/*.log"):  # agents' own logs, if any
        shutil.copyfile(log, folder / f"{log.parent.name}-{log.name}")
    print(f"stack logs kept in {folder}")


@pytest.fixture
def page(context):
    return context.new_page()


@dataclass
class Shots:
    """Screenshots of one test's steps, each at laptop and tablet width, checked for
    horizontal overflow at both (a page that scrolls sideways is not usable there)."""

    test: str

    def __call__(self, page, step: str, *, check_overflow: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        original = page.viewport_size or LAPTOP
        try:
            for label, size in (("laptop", LAPTOP), ("tablet", TABLET)):
                page.set_viewport_size(size)
                page.wait_for_timeout(100)  # one layout pass after the resize
                page.screenshot(path=str(SCREENSHOTS / f"{self.test}-{step}-{label}.png"), full_page=True)
                if check_overflow:
                    assert_no_horizontal_overflow(page, f"{step} at {label} width")
        finally:
            page.set_viewport_size(original)


@pytest.fixture
def shots(request) -> Shots:
    return Shots(re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name.removeprefix("test_")))


def assert_no_horizontal_overflow(page, where: str) -> None:
    widths = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " culprits: Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right"
        " > window.innerWidth + 1).slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
        " + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''))})"
    )
    assert widths["scroll"] <= widths["inner"] + 1, (
        f"{page.url}: {where}: the page scrolls sideways ({widths['scroll']} px wide in a {widths['inner']} px "
        f"window); widest elements: {widths['culprits']}"
    )


def log_in(page, stack, *, next_path: str = "/") -> None:
    """Log in through the form with the keyboard: type, Tab, type, Enter."""
    from playwright.sync_api import expect

    page.goto(next_path)
    expect(page).to_have_url(re.compile(r"/login/"))
    username = page.get_by_label("Username")
    expect(username).to_be_focused()  # autofocus
    page.keyboard.type(stack.login["username"])
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(stack.login["password"])
    page.keyboard.press("Enter")
    expect(page).not_to_have_url(re.compile(r"/login/"))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
