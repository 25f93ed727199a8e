"""Fixed-window rate limits kept in the shared cache (Redis), so every process counts together."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache


def _key(scope: str, subject: str, window: int) -> str:
    return f"{settings.RATELIMIT_NAMESPACE}:{scope}:{subject}:{int(time.time() // window)}"


def hit(scope: str, subject: str, *, limit: int, window: int) -> bool:
    """Count one attempt; False when the subject is over its limit for this window."""
    key = _key(scope, subject, window)
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key) <= limit
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 1)
        return True

