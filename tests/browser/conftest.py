"""Browser tests: a real Caisey stack (tests/e2e/stack.py) driven by Playwright in Chromium.

Chromium is never downloaded (`playwright install` cannot reach its CDN here, and a user's
machine may have its own): the `browser` fixture launches the first Chromium it finds,
$CAISEY_CHROMIUM first. Without one the tests skip, unless CAISEY_BROWSER_REQUIRED is set (as
in CI), where they fail with the reason.

Screenshots of the main pages, at laptop and tablet widths, go to test-artifacts/screenshots/
at the repository root, named <test>-<step>-<width>.png; a failing test adds <test>-FAILED.png
and keeps the stack's logs in test-artifacts/browser-logs/<test>/. The accessibility test
(test_accessibility.py, docs/accessibility.md) adds a11y-<page>-<laptop|tablet|phone>.png for
every page it checks and test-artifacts/accessibility/axe-report.json.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.support import (
    LAPTOP,
    LAUNCH_ARGS,
    SCREENSHOTS,
    TIMEOUT_MS,
    Shots,
    browser_required,
    expect,
    find_chromium,
    keep_logs,
)
from tests.e2e import helpers as h
from tests.e2e.stack import Stack


def unavailable(reason: str):
    """Fail where a browser is required (CI), skip elsewhere; either way say why."""
    if browser_required():
        pytest.fail(f"browser tests are required here (CAISEY_BROWSER_REQUIRED is set) but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason} (set CAISEY_CHROMIUM to a Chromium or Chrome binary to run them)")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path, why = find_chromium()
    if path is None:
        unavailable(why)
    return path


# Per module, not per session: Playwright's sync API keeps an event loop running in the thread
# while it is started, and asyncio tests that a worker runs afterwards could not start theirs.
# (Not xdist's loadgroup either: it keys tests by node id, and Schemathesis gives all its
# cases one node id, so 17 of its 18 API operations silently did not run.)
@pytest.fixture(scope="module")
def browser(chromium_executable):
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(
            f"the playwright package is not installed ({exc}); install the test extras: pip install -e '.[test]'"
        )
    pw = sync_playwright().start()
    try:
        try:
            browser = pw.chromium.launch(
                executable_path=chromium_executable, headless=True, args=LAUNCH_ARGS, timeout=60_000
            )
        except PlaywrightError as exc:
            unavailable(f"{chromium_executable} did not start: {str(exc).strip().splitlines()[0]}")
        yield browser
        browser.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def stack(redis_server, browser):
    """One stack per test module (Daphne and a Celery worker with beat), seeded with a technician
    and the client groups `erp` (shell commands need the end user's approval) and `retail`.
    It asks for the browser first: without Chromium, no stack is started for nothing."""
    s = Stack()
    try:
        s.port = s.start_server()
        s.worker = s.start_worker()
        s.login = s.seed()
        s.django(
            "from caisey.actors import Party; from endpoints import services; from endpoints.models import Tenant;"
            "services.client_group_create(actor=Party.OPERATOR, tenant=Tenant.all_tenants.get(slug='acme'),"
            " name='retail client', slug='retail')"
        )
        s.django(h.set_policy("erp", "shell", deadline_s=600))
        s.django(h.set_policy("retail", "none"))  # commands run unasked (a new group's default gates them)
        s.base_url = f"http://127.0.0.1:{s.port}"
    except BaseException:
        print(s.logs())
        s.cleanup()
        raise
    try:
        yield s
    finally:
        s.cleanup()


def _new_context(browser, stack):
    expect().set_options(timeout=TIMEOUT_MS)
    ctx = browser.new_context(viewport=LAPTOP, base_url=stack.base_url, locale="en-GB")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    return ctx


def _close_context(ctx, stack, request, *, label: str = "") -> None:
    """Close a context; if the test failed, first screenshot its pages (and, for the main
    context, keep the stack's logs)."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(ctx.pages):
            suffix = (f"-{label}" if label else "") + (f"-{i}" if i else "")
            try:
                p.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-FAILED{suffix}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the logs matter more
                print(f"no failure screenshot of {label or 'the'} page {i}: {exc}")
        if not label:
            keep_logs(stack, request.node.name)
            print(stack.logs())
    ctx.close()


@pytest.fixture
def context(browser, stack, request):
    """A fresh browser profile per test; on failure, screenshots of its pages and the stack's logs."""
    ctx = _new_context(browser, stack)
    yield ctx
    _close_context(ctx, stack, request)


@pytest.fixture
def outsider(browser, stack, request):
    """A second, separate browser profile that never logs in: the client's approver or the client
    opening a link from an email. It shares no cookies with `context`."""
    ctx = _new_context(browser, stack)
    yield ctx
    _close_context(ctx, stack, request, label="outsider")


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture
def shots(request) -> Shots:
    return Shots(re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name.removeprefix("test_")))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
