"""Fixed-window rate limits kept in the shared cache (Redis), so every process counts together."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.cache.backends.redis import RedisCache

_cache: BaseCache | None = None
_cache_lock = threading.Lock()


def _shared_cache() -> BaseCache:
    """One cache client for the whole process. Django's `cache` is context-local, and in a
    Daphne process every socket's calls run in a context of their own: it opened a Redis
    connection per connected agent (bench/README.md)."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = caches.create_connection("default")
    return _cache


def _key(scope: str, subject: str, window: int) -> str:
    return f"{settings.RATELIMIT_NAMESPACE}:{scope}:{subject}:{int(time.time() // window)}"


def hit(scope: str, subject: str, *, limit: int, window: int) -> bool:
    """Count one attempt; False when the subject is over its limit for this window."""
    cache = _shared_cache()
    key = _key(scope, subject, window)
    client = getattr(getattr(cache, "_cache", None), "get_client", None)
    if isinstance(cache, RedisCache) and client is not None:
        # One round trip (every agent hello counts one): create the window's counter, then count.
        name = cache.make_and_validate_key(key)
        pipe = client(name, write=True).pipeline(transaction=False)
        pipe.set(name, 0, ex=window + 1, nx=True)
        pipe.incr(name)
        return pipe.execute()[1] <= limit
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key) <= limit
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 1)
        return True
