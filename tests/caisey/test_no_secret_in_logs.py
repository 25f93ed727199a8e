"""No secret in a log, and the data folder owner-only (issue 11, item 9)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from caisey.daphne import daphne_argv
from caisey.redact import RedactTokens, redact_tokens
from tests.caisey.test_settings import DEV, GOOD_KEY, ROOT, run_python, settings_with
from tests.e2e.stack import free_port, wait_for

SHARE = "shr_" + "S3cr" + "etShareToken" * 3
APPROVAL = "apl_" + "Ap9r" + "ovalSecretXx" * 3
ENROLL = "cet_" + "En4o" + "llSecretXxxx" * 3


def test_tokens_are_cut_to_their_kind_and_four_characters():
    line = f'1.2.3.4 - - "GET /share/{SHARE}/pdf" 200 | /approve/{APPROVAL}/ | token={ENROLL}&x=1'
    redacted = redact_tokens(line)
    for token in (SHARE, APPROVAL, ENROLL):
        assert token not in redacted and token[8:] not in redacted
    assert f"/share/{SHARE[:8]}…/pdf" in redacted and f"/approve/{APPROVAL[:8]}…/" in redacted
    assert f"token={ENROLL[:8]}…&x=1" in redacted
    assert redact_tokens("GET /sessions/ 200") == "GET /sessions/ 200"


def test_django_log_records_are_redacted():
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "Not Found: %s", (f"/share/{SHARE}/",), None
    )
    assert RedactTokens().filter(record) is True
    assert SHARE not in record.getMessage() and SHARE[:8] in record.getMessage()


@pytest.mark.e2e
def test_daphnes_access_log_and_djangos_warnings_carry_no_whole_token(tmp_path):
    """Was: `"GET /share/shr_<the whole token>/" 404` in Daphne's access log."""
    port = free_port()
    log = tmp_path / "daphne.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        **DEV,
        "CAISEY_DATA_DIR": str(tmp_path / "data"),
        "CAISEY_REDIS_URL": settings.REDIS_URL,
        "CAISEY_REDIS_PREFIX": f"logs{uuid.uuid4().hex[:8]}",
        "PYTHONUNBUFFERED": "1",
    }
    # Tokens longer than any real one: refused before the database (this server has no tables).
    share, approval = SHARE + "x" * 60, APPROVAL + "y" * 60
    with open(log, "wb") as out:
        daphne = subprocess.Popen(
            daphne_argv(sys.executable, host="127.0.0.1", port=port), cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:

        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0

        wait_for(lambda: get("/login/") == 200, timeout=60, what="Daphne answering")
        assert get(f"/share/{share}/") == 404
        assert get(f"/approve/{approval}/") == 404
        wait_for(lambda: "GET /approve/" in log.read_text(), timeout=10, what="the access log line")
    finally:
        daphne.terminate()
        daphne.wait(timeout=30)
    text = log.read_text()
    assert f'"GET /share/{SHARE[:8]}…/"' in text and f'"GET /approve/{APPROVAL[:8]}…/"' in text, text
    assert f"Not Found: /share/{SHARE[:8]}…/" in text, text  # Django's own warning, redacted too
    for token in (share, approval):
        assert token[8:20] not in text, text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


WRITE_DATA = """
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "caisey.settings"
import django
django.setup()
from django.core.mail import send_mail
from django.db import connection
connection.ensure_connection()
send_mail("subject", "body", "from@example.com", ["to@example.com"])
"""


def test_the_data_folder_and_its_files_are_owner_only(tmp_path):
    """Was: the SQLite file and the file backend's approval e-mails were world-readable (0644)."""
    result = run_python(WRITE_DATA, tmp_path, **DEV)
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert mode(data) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "caisey.sqlite3" for p in files) and any(p.parent.name == "outbox-mail" for p in files)
    assert {str(p.relative_to(data)): oct(mode(p)) for p in files if mode(p) & 0o077} == {}
    assert all(mode(p) == 0o700 for p in data.rglob("*") if p.is_dir())


def test_an_existing_data_folder_of_ours_is_tightened_a_shared_one_left_alone(tmp_path):
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    settings_with(tmp_path, **DEV)
    assert mode(tmp_path / "data") == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    result = run_python("import caisey.settings", tmp_path, **DEV, CAISEY_DATA_DIR=str(shared))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_production_sends_email_by_smtp(tmp_path):
    show = "import caisey.settings as s; print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_TIMEOUT)"
    production = run_python(
        show, tmp_path, CAISEY_SECRET_KEY=GOOD_KEY, CAISEY_EMAIL_HOST="smtp.example.com", CAISEY_EMAIL_PORT="587"
    )
    assert production.stdout.split() == ["django.core.mail.backends.smtp.EmailBackend", "smtp.example.com", "587", "30"]
    development = run_python(show, tmp_path, **DEV)
    assert development.stdout.split()[0] == "django.core.mail.backends.filebased.EmailBackend"


def test_a_password_reset_or_invitation_key_is_cut_whole():
    line = (
        '127.0.0.1:5 - - [04/Dec/2026:15:00:00] "GET /accounts/password/reset/key/1b-cx2k7f-9a8b7c6d5e4f/ HTTP/1.1" 200'
    )
    redacted = redact_tokens(line)
    assert "cx2k7f" not in redacted and "9a8b7c6d5e4f" not in redacted
    assert "/accounts/password/reset/key/…/" in redacted
