"""How fast one agent socket may send frames: a token bucket per socket (one socket per endpoint;
a newer one replaces the older). A legitimate agent sends a heartbeat every 10 s or more, an ack
per delivered message, and an action's output in 16 KiB chunks (at most 64 for the 1 MiB kept
per action): far below the default 50 frames/s with a burst of 500. Past it the bridge closes the
socket (protocol.CLOSE_RATE_LIMITED) instead of spending a database trip per frame."""

from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, *, rate_per_s: float, burst: int, now: float | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        """Spend one token; False when none is left."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
