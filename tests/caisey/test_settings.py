"""Settings come from CAISEY_* environment variables and refuse unsafe production setups.

Each case imports the settings in a fresh interpreter, with only the variables it names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 24 + "-production-secret-key-0123456789"
DEV = {"CAISEY_DEVELOPMENT": "true"}  # the demo's and the tests' mode

SHOW_SETTINGS = """
import json
import caisey.settings as s
db = s.DATABASES["default"]
print(json.dumps({
    "DEBUG": s.DEBUG, "SECRET_KEY": s.SECRET_KEY, "ALLOWED_HOSTS": s.ALLOWED_HOSTS,
    "ENGINE": db["ENGINE"], "NAME": str(db["NAME"]), "HOST": db.get("HOST"), "PORT": db.get("PORT"),
    "USER": db.get("USER"), "OPTIONS": db.get("OPTIONS", {}), "DATA_DIR": str(s.DATA_DIR),
    "REDIS_URL": s.REDIS_URL, "EMBEDDED_REDIS": s.EMBEDDED_REDIS,
    "SESSION_COOKIE_SECURE": getattr(s, "SESSION_COOKIE_SECURE", None),
    "CSRF_COOKIE_SECURE": getattr(s, "CSRF_COOKIE_SECURE", None),
    "SECURE_SSL_REDIRECT": s.SECURE_SSL_REDIRECT, "SECURE_HSTS_SECONDS": s.SECURE_HSTS_SECONDS,
}))
"""

SHOW_JOURNAL_MODE = """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "caisey.settings"
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    print(cursor.fetchone()[0])
"""


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAISEY_", "DJANGO_"))}
    clean.update({"CAISEY_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), **env})
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def settings_with(tmp_path: Path, **env: str) -> dict:
    result = run_python(SHOW_SETTINGS, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(tmp_path: Path, **env: str) -> str:
    result = run_python(SHOW_SETTINGS, tmp_path, **env)
    assert result.returncode != 0, f"settings imported although they should refuse: {result.stdout}"
    assert "django.core.exceptions.ImproperlyConfigured" in result.stderr, result.stderr
    return result.stderr


# --- the secret key in production ------------------------------------------------------------


def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path):
    assert "CAISEY_SECRET_KEY" in refused(tmp_path, CAISEY_DEBUG="false")


def test_debug_off_with_the_default_key_refuses_to_start(tmp_path):
    assert "CAISEY_SECRET_KEY" in refused(
        tmp_path, CAISEY_DEBUG="false", CAISEY_SECRET_KEY="caisey-insecure-development-key-do-not-use-in-production"
    )


@pytest.mark.parametrize("key", ["", "short", "x" * 31])
def test_debug_off_with_an_empty_or_short_key_refuses_to_start(tmp_path, key):
    refused(tmp_path, CAISEY_DEBUG="false", CAISEY_SECRET_KEY=key)


def test_debug_off_with_a_proper_key_starts_with_secure_cookies(tmp_path):
    s = settings_with(tmp_path, CAISEY_DEBUG="false", CAISEY_SECRET_KEY=GOOD_KEY)
    assert s["DEBUG"] is False and s["SECRET_KEY"] == GOOD_KEY
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True


def test_production_flag_with_debug_on_refuses_to_start(tmp_path):
    assert "CAISEY_PRODUCTION" in refused(
        tmp_path, CAISEY_PRODUCTION="true", CAISEY_DEBUG="true", CAISEY_SECRET_KEY=GOOD_KEY
    )
    assert "CAISEY_PRODUCTION" in refused(tmp_path, CAISEY_PRODUCTION="true", **DEV)


# --- safe defaults outside the demo and the tests (issue 11, item 7) ----------------------------


def test_nothing_set_refuses_to_start_naming_the_secret_key_variable(tmp_path):
    """Was: DEBUG on and a public built-in key whenever nothing was set."""
    assert "CAISEY_SECRET_KEY" in refused(tmp_path)
    assert "CAISEY_SECRET_KEY" in refused(tmp_path, CAISEY_DEBUG="true")


def test_debug_is_off_by_default_with_https_only(tmp_path):
    s = settings_with(tmp_path, CAISEY_SECRET_KEY=GOOD_KEY)
    assert s["DEBUG"] is False
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True
    assert s["SECURE_SSL_REDIRECT"] is True and s["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600


def test_plain_http_is_a_setting_and_the_old_name_still_works(tmp_path):
    s = settings_with(tmp_path, CAISEY_SECRET_KEY=GOOD_KEY, CAISEY_HTTPS="false")
    assert s["SESSION_COOKIE_SECURE"] is False and s["SECURE_SSL_REDIRECT"] is False and s["SECURE_HSTS_SECONDS"] == 0
    s = settings_with(tmp_path, CAISEY_SECRET_KEY=GOOD_KEY, CAISEY_SECURE_COOKIES="false")
    assert s["SESSION_COOKIE_SECURE"] is False and s["SECURE_SSL_REDIRECT"] is False


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    """Was: security.W004 (HSTS) and W008 (SSL redirect), and W018 (DEBUG) without CAISEY_DEBUG."""
    result = run_python(
        "import sys; from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'DEBUG'])",
        tmp_path,
        DJANGO_SETTINGS_MODULE="caisey.settings",
        CAISEY_SECRET_KEY=GOOD_KEY,
        CAISEY_ALLOWED_HOSTS="caisey.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_a_boolean_that_is_not_one_is_an_error_not_a_guess(tmp_path):
    assert "CAISEY_DEBUG" in refused(tmp_path, CAISEY_DEBUG="maybe")


def test_development_defaults(tmp_path):
    s = settings_with(tmp_path, **DEV)
    assert s["DEBUG"] is True and s["SECRET_KEY"]
    assert s["SESSION_COOKIE_SECURE"] is False and s["SECURE_SSL_REDIRECT"] is False and s["SECURE_HSTS_SECONDS"] == 0
    assert "testserver" in s["ALLOWED_HOSTS"] and "localhost" in s["ALLOWED_HOSTS"]
    assert s["DATA_DIR"] == str((tmp_path / "data").resolve())


def test_allowed_hosts_from_a_comma_separated_list(tmp_path):
    s = settings_with(tmp_path, **DEV, CAISEY_ALLOWED_HOSTS="caisey.example.com, .msp.example ,")
    assert s["ALLOWED_HOSTS"] == ["caisey.example.com", ".msp.example"]


# --- database -----------------------------------------------------------------------------------


def test_postgres_url_selects_postgresql(tmp_path):
    s = settings_with(tmp_path, **DEV, CAISEY_DATABASE_URL="postgres://caisey:pw@db.example.com:5433/caisey_prod")
    assert s["ENGINE"] == "django.db.backends.postgresql"
    assert (s["NAME"], s["HOST"], s["PORT"], s["USER"]) == ("caisey_prod", "db.example.com", 5433, "caisey")
    assert "init_command" not in s["OPTIONS"]  # the SQLite pragmas are not sent to PostgreSQL


def test_sqlite_default_lives_in_the_data_dir_with_wal(tmp_path):
    s = settings_with(tmp_path, **DEV)
    assert s["ENGINE"] == "django.db.backends.sqlite3"
    assert s["NAME"] == str((tmp_path / "data" / "caisey.sqlite3").resolve())
    assert "journal_mode=WAL" in s["OPTIONS"]["init_command"]
    assert "busy_timeout" in s["OPTIONS"]["init_command"]
    assert s["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_sqlite_connections_really_use_wal(tmp_path):
    result = run_python(SHOW_JOURNAL_MODE, tmp_path, **DEV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "wal"


# --- redis -------------------------------------------------------------------------------------------


def test_embedded_redis_by_default_and_external_when_configured(tmp_path):
    s = settings_with(tmp_path, **DEV)
    assert s["EMBEDDED_REDIS"] is True
    assert s["REDIS_URL"] == f"unix://{(tmp_path / 'data').resolve()}/redis.sock"
    s = settings_with(tmp_path, **DEV, CAISEY_REDIS_URL="redis://redis.example.com:6379/2")
    assert s["EMBEDDED_REDIS"] is False and s["REDIS_URL"] == "redis://redis.example.com:6379/2"


def test_renamed_variables_are_read_under_their_old_names_with_a_warning(monkeypatch):
    from caisey import env

    assert env.RENAMED["CAISEY_HEARTBEAT_ACTIVE"] == "CAISEY_HEARTBEAT_ACTIVE_S"
    monkeypatch.delenv("CAISEY_HEARTBEAT_ACTIVE_S", raising=False)
    monkeypatch.setenv("CAISEY_HEARTBEAT_ACTIVE", "7")
    with pytest.warns(FutureWarning, match="CAISEY_HEARTBEAT_ACTIVE is deprecated.*CAISEY_HEARTBEAT_ACTIVE_S"):
        assert env.env_float("CAISEY_HEARTBEAT_ACTIVE_S", 10.0) == 7.0
    monkeypatch.setenv("CAISEY_HEARTBEAT_ACTIVE_S", "3")  # the new name wins, silently
    assert env.env_float("CAISEY_HEARTBEAT_ACTIVE_S", 10.0) == 3.0


def test_every_duration_setting_names_its_unit():
    from django.conf import settings

    unitless = [
        key
        for key, value in settings.CAISEY.items()
        if isinstance(value, float) and not key.endswith(("_S", "_MS")) and key != "PRESENCE_MISSED_BEATS"
    ]
    assert not unitless, f"durations must end in _S or _MS: {unitless}"
