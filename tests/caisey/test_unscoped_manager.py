"""The unscoped ``all_tenants`` manager stays on a short list of places, each with its reason.

Tenancy fails closed (caisey/tenancy.py): app code reads and writes through the scoped
``objects`` manager with a tenant bound. ``Model.all_tenants`` sees every tenant; it is for
the few places that must look before any tenant is known, or on purpose across all of them.
A new use fails this test until it is added below with the reason it cannot be scoped.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("caisey", "endpoints", "bridge", "sessions_app", "audit")

# file -> (uses, why the tenant cannot be bound there instead)
ALLOWED: dict[str, tuple[int, str]] = {
    "sessions_app/services/transcript.py": (
        2,
        "transcript_verify is a read-only integrity check of one session by id, run from any scope "
        "(the verify_transcripts command over every tenant, exports, tests)",
    ),
    "sessions_app/api.py": (
        1,
        "OpenAPI schema generation builds views with no request and no tenant; the queryset is empty (.none())",
    ),
    "endpoints/api_admin.py": (
        1,
        "OpenAPI schema generation builds views with no request and no tenant; the queryset is empty (.none())",
    ),
}


def unscoped_uses() -> Counter[str]:
    uses: Counter[str] = Counter()
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "all_tenants":
                    uses[str(path.relative_to(ROOT))] += 1
    return uses


def test_unscoped_manager_only_where_allowed():
    uses = unscoped_uses()
    unexpected = {f: n for f, n in uses.items() if f not in ALLOWED}
    assert not unexpected, f"all_tenants used outside the allow-list (bind the tenant, or add a reason): {unexpected}"
    over = {f: (n, ALLOWED[f][0]) for f, n in uses.items() if n > ALLOWED[f][0]}
    assert not over, f"more all_tenants uses than allowed (found, allowed): {over}"


def test_allow_list_is_tight():
    """An entry whose uses went away must shrink with them, so the list never hides a new use."""
    uses = unscoped_uses()
    stale = {f: (uses.get(f, 0), allowed) for f, (allowed, _) in ALLOWED.items() if uses.get(f, 0) != allowed}
    assert not stale, f"allow-list out of date (found, listed): {stale}"


def test_every_entry_says_why():
    assert all(len(why) > 20 for _, why in ALLOWED.values())
