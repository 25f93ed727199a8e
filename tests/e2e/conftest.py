from __future__ import annotations

import pytest

from tests.e2e.stack import Stack


@pytest.fixture
def stack(request):
    """A migrated stack with one Daphne and a Celery worker with beat; logs shown on failure."""
    params = dict(getattr(request, "param", None) or {})
    own_redis = bool(params.pop("own_redis", False))
    s = Stack(extra_env=params, own_redis=own_redis)
    try:
        s.port = s.start_server()
        s.worker = s.start_worker()
        yield s
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(s.logs())
        s.cleanup()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
