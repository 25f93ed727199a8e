"""Security headers every page carries, and templates that let the Content-Security-Policy be strict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [ROOT / "templates", *ROOT.glob("*/templates")]


def templates() -> list[Path]:
    return sorted(p for d in TEMPLATE_DIRS for p in d.rglob("*.html"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/share/caisey_share_unknown/"])
def test_pages_send_a_strict_content_security_policy(client, path):
    """Was: no Content-Security-Policy at all."""
    response = client.get(path)
    policy = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in policy, (path, response.status_code, policy)
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.django_db
def test_only_the_login_page_lets_a_form_leave_for_another_origin(client):
    """Its single sign-on form is redirected to the tenant's identity provider (seen in Chromium:
    with form-action 'self' the redirect to the provider was blocked and the sign-in went nowhere)."""
    assert "form-action" not in client.get("/login/").headers["Content-Security-Policy"]
    assert "form-action 'self'" in client.get("/share/caisey_share_unknown/").headers["Content-Security-Policy"]


def test_templates_have_no_inline_script_style_or_event_handler():
    """`default-src 'self'` blocks them: scripts and styles live in caisey/static/."""
    assert templates(), "no templates found"
    offenders = []
    for path in templates():
        text = path.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)[^>]*>", r"<style\b", r"\sstyle=", r"\son[a-z]+=", r"javascript:"):
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text, re.I)]
    assert not offenders, offenders
