"""The webhook signature: ``Caisey-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``, where each
``v1`` is HMAC-SHA256 under one valid secret of ``f"{t}.{body}"`` (the exact bytes sent). Two
``v1`` values during a secret rotation (current first, then previous). Receivers recompute with
their secret, compare in constant time against any ``v1`` and refuse a ``t`` outside their replay
window (docs/integrations.md; 300 s there)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Caisey-Signature"
REPLAY_WINDOW_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    if not secrets:
        raise ValueError("a webhook is signed with at least one secret")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={signature(s, t, body)}" for s in secrets)])


def verify(secret: str, header: str, body: bytes, *, now: float | None = None, window_s: int = REPLAY_WINDOW_S) -> bool:
    """What a receiver does (the test receiver uses it; the docs show the same code)."""
    t, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or abs((time.time() if now is None else now) - t) > window_s:
        return False
    expected = signature(secret, t, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
