"""Reading configuration from the environment, with types and clear errors."""

from __future__ import annotations

import os
import warnings

from django.core.exceptions import ImproperlyConfigured

# Settings name their unit (``_S`` seconds, ``_MS`` milliseconds, ``_BYTES``, ``_DAYS``); the
# variables renamed to say so are still read under their old names for one release, with a
# warning. Old name -> new name; README.md lists them.
RENAMED: dict[str, str] = {
    "CAISEY_HEARTBEAT_ACTIVE": "CAISEY_HEARTBEAT_ACTIVE_S",
    "CAISEY_HEARTBEAT_LAZY": "CAISEY_HEARTBEAT_LAZY_S",
    "CAISEY_PRESENCE_GRACE": "CAISEY_PRESENCE_GRACE_S",
    "CAISEY_LAST_SEEN_FLUSH": "CAISEY_LAST_SEEN_FLUSH_S",
    "CAISEY_HELLO_TIMEOUT": "CAISEY_HELLO_TIMEOUT_S",
    "CAISEY_GC_FREEZE_EVERY": "CAISEY_GC_FREEZE_EVERY_S",
    "CAISEY_PROMPT_RECONCILE_EVERY": "CAISEY_PROMPT_RECONCILE_EVERY_S",
    "CAISEY_PRESENCE_SWEEP": "CAISEY_PRESENCE_SWEEP_S",
    "CAISEY_OUTBOX_SWEEP": "CAISEY_OUTBOX_SWEEP_S",
    "CAISEY_OUTBOX_ACK_TIMEOUT": "CAISEY_OUTBOX_ACK_TIMEOUT_S",
    "CAISEY_OUTBOX_BACKOFF_BASE": "CAISEY_OUTBOX_BACKOFF_BASE_S",
    "CAISEY_OUTBOX_BACKOFF_CAP": "CAISEY_OUTBOX_BACKOFF_CAP_S",
    "CAISEY_DEGRADED_OLDEST_UNACKED": "CAISEY_DEGRADED_OLDEST_UNACKED_S",
    "CAISEY_DEGRADED_WINDOW": "CAISEY_DEGRADED_WINDOW_S",
    "CAISEY_LAZY_AFTER_IDLE": "CAISEY_LAZY_AFTER_IDLE_S",
    "CAISEY_ACTION_QUEUE_EXPIRY": "CAISEY_ACTION_QUEUE_EXPIRY_S",
    "CAISEY_ACTION_OUTPUT_LIMIT": "CAISEY_ACTION_OUTPUT_LIMIT_BYTES",
    "CAISEY_ACTION_DEADLINE_GRACE": "CAISEY_ACTION_DEADLINE_GRACE_S",
    "CAISEY_SESSION_ABANDON_AFTER": "CAISEY_SESSION_ABANDON_AFTER_S",
    "CAISEY_DB_CONN_MAX_AGE": "CAISEY_DB_CONN_MAX_AGE_S",
    "CAISEY_GROUP_EXPIRY": "CAISEY_GROUP_EXPIRY_S",
    # Now also redirects http to https and sends HSTS: one switch for "served over HTTPS".
    "CAISEY_SECURE_COOKIES": "CAISEY_HTTPS",
}


def _raw(name: str) -> str | None:
    raw = os.environ.get(name)
    if raw is None:
        for old, new in RENAMED.items():
            if new == name and os.environ.get(old) is not None:
                warnings.warn(
                    f"{old} is deprecated and will be ignored in the next release; set {name} instead",
                    FutureWarning,  # shown by default: the operator must see it
                    stacklevel=3,
                )
                return os.environ[old]
    return raw


def env_str(name: str, default: str = "") -> str:
    raw = _raw(name)
    return default if raw is None else raw


def env_bool(name: str, default: bool = False) -> bool:
    raw = _raw(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def env_float(name: str, default: float) -> float:
    raw = _raw(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_int(name: str, default: int) -> int:
    return int(env_float(name, default))


def env_list(name: str, default: list[str]) -> list[str]:
    raw = _raw(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
