"""Shared fixtures. Tests run against real Redis (embedded unless CAISEY_REDIS_URL says
otherwise) and the configured database (SQLite unless CAISEY_DATABASE_URL says otherwise)."""

from __future__ import annotations

import os
import time
import uuid
from types import SimpleNamespace

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.db import connections

from caisey import embedded_redis, ratelimit, tenancy

# Persistent connections (the servers' default) would outlive the tests in threads this process
# ran them in (Channels' sync thread, test threads), and PostgreSQL refuses to drop a test
# database with sessions left open. The stacks the e2e tests start keep the default.
settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
connections.settings["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """Make sure the Redis the settings point at answers; start the embedded one if needed."""
    started = False
    if settings.EMBEDDED_REDIS:
        started = embedded_redis.ensure_running(settings.DATA_DIR)
    yield settings.REDIS_URL
    # Under xdist other workers may still use it; bin/test stops it after the whole run.
    if started and not os.environ.get("PYTEST_XDIST_WORKER"):
        embedded_redis.stop(settings.DATA_DIR)


@pytest.fixture(autouse=True)
def _isolated_rate_limits(settings, monkeypatch):
    # Rate-limit counters live in the shared Redis; give each test its own.
    settings.RATELIMIT_NAMESPACE = f"rl-test-{uuid.uuid4().hex}"
    # And one window for the whole test: the limits are fixed windows (caisey/ratelimit.py), and a
    # test that made 31 enrollments across a minute's boundary found its counter reset (CI,
    # 2026-12-05: 401 where 429 was due).
    frozen = time.time()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: frozen))
    # allauth's login limits and used TOTP codes live in the default cache: one prefix per test.
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}
    # Hashing passwords for real costs about half a second per user; tests make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The GC pacer of the agent socket (bridge/gc_pacing.py) has its own test.
    settings.CAISEY = {**settings.CAISEY, "GC_FREEZE_EVERY_S": 0}


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer object of each test's own. The Redis layer keeps per-event-loop receive
    state; a consumer an earlier test left running would otherwise leave it bound to that
    test's closed loop."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def system_scope():
    with tenancy.system():
        yield
