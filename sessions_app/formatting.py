"""Figures as people read them, for the client's record (share page, PDF): durations, sizes,
numbers without float noise, times with their zone, field names without JSON keys, actors by name.

One set of formatters: the story selector (sessions_app/selectors/story.py), the PDF
(sessions_app/exports/pdf.py) and the share page's template filters
(sessions_app/templatetags/human.py) all call these. Every function takes what the record
holds (numbers, ISO strings, the transcript's text of a value) and returns text; a value it
cannot read is returned as it is, never dropped.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from caisey_agent.protocol import ACTION_KINDS

# --- figures -------------------------------------------------------------------------------------


def _trim(value: float, places: int) -> str:
    """``value`` with at most ``places`` decimals and no trailing zeros: 1.20 → "1.2", 2.0 → "2"."""
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def duration_s(seconds: float) -> str:
    """4.2e-2 → "42 ms", 3.4 → "3.4 s", 125 → "2 min 5 s", 3720 → "1 h 2 min", 93600 → "1 d 2 h"."""
    if not math.isfinite(seconds) or seconds < 0:
        return str(seconds)
    if seconds < 1:
        ms = seconds * 1000
        return "under 1 ms" if 0 < ms < 0.5 else f"{round(ms)} ms"
    if seconds < 10:
        return f"{_trim(seconds, 1)} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    for big, small, big_unit, small_unit in ((86400, 3600, "d", "h"), (3600, 60, "h", "min"), (60, 1, "min", "s")):
        if whole >= big:
            rounded = round(whole / small) * small  # drop what is below the smaller unit
            b, s = divmod(rounded, big)
            s //= small
            return f"{b} {big_unit}" + (f" {s} {small_unit}" if s else "")
    return f"{whole} s"  # not reached: whole >= 60 here


def duration_ms(ms: float) -> str:
    """47.620999999999995 → "48 ms"; 125000 → "2 min 5 s"."""
    return duration_s(ms / 1000) if math.isfinite(ms) else str(ms)


SIZE_UNITS = ("KB", "MB", "GB", "TB")


def size(n_bytes: float) -> str:
    """Decimal units, as disks and file managers count: 512 → "512 bytes", 1_200_000 → "1.2 MB"."""
    if not math.isfinite(n_bytes) or n_bytes < 0:
        return str(n_bytes)
    if n_bytes < 1000:
        n = round(n_bytes)
        return f"{n} byte{'' if n == 1 else 's'}"
    value = float(n_bytes)
    for unit in SIZE_UNITS:
        value /= 1000
        if value < 999.95 or unit == SIZE_UNITS[-1]:
            return f"{_trim(value, 0 if value >= 100 else 1)} {unit}"
    return str(n_bytes)  # not reached


def number(value: float) -> str:
    """No float noise: 47.620999999999995 → "47.62", 3.0 → "3", 0.000123 → "0.00012"; ints as they are."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    return _trim(value, 2)


# --- times ---------------------------------------------------------------------------------------


def when(value: datetime | None) -> str:
    """A moment in the server's time zone (settings.TIME_ZONE), named: "4 Dec 2026, 14:20:16 UTC"."""
    if value is None:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local.day} {local:%b %Y, %H:%M:%S} {local.tzname() or ''}".rstrip()


def clock(value: datetime | None) -> str:
    """The time of day with its zone: "14:20:16 UTC"."""
    if value is None:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local:%H:%M:%S} {local.tzname() or ''}".rstrip()


# --- field names and values ------------------------------------------------------------------------

#: Field names as a reader knows them; anything else loses its unit suffix and underscores.
LABELS = {
    "data": "Output",
    "text": "Text",
    "result": "Result",
    "exit_code": "Exit code",
    "latency_ms": "Delivery time",
    "latency_p95_ms": "Slowest deliveries (95th percentile)",
    "attempts": "Delivery attempts",
    "attempts_so_far": "Delivery attempts so far",
    "expires_at": "Valid until",
    "deadline": "Answer needed by",
    "decided_by": "Decided by",
    "last_error": "Last error",
    "queue_depth": "Messages waiting",
    "why": "Why",
    "was": "Was",
    "to": "Now",
    "from": "Before",
    "offline": "Endpoint offline",
    "params": "Settings",
    "reviewer": "Reviewed by",
    "kind": "Check",
    "upto": "Entries reviewed",
    "shows_upto": "Entries shown",
}
#: A key's unit suffix and how to read its value.
_UNIT_SUFFIXES = (("_ms", "ms"), ("_seconds", "s"), ("_s", "s"), ("_bytes", "bytes"), ("_at", "time"))


def _key(path: tuple | str) -> str:
    if isinstance(path, str):
        return path
    keys = [p for p in path if isinstance(p, str)]
    return keys[-1] if keys else ""


def label(path: tuple | str) -> str:
    """A field's name for people: ("result", "text") → "Result", "latency_ms" → "Delivery time",
    "read_latency_ms" → "Read latency", "exit_code" → "Exit code"."""
    if path in (("result", "text"),):
        return "Result"
    key = _key(path)
    if key in LABELS:
        return LABELS[key]
    for suffix, _unit in _UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    words = key.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) if words else "Value"


def _as_number(text: str) -> float | int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def value(path: tuple | str, text: str) -> str:
    """A field's value for people, read by its name: "latency_ms" 47.620999999999995 → "48 ms",
    "output_bytes" 1200000 → "1.2 MB", "expires_at" (ISO) → "4 Dec 2026, 14:20:16 UTC",
    any other number without float noise; text as it is."""
    key = _key(path)
    stripped = text.strip()
    if key == "kind" and stripped in ACTION_KINDS:
        return ACTION_KINDS[stripped].title
    if key in ("status", "was", "state", "decision") and stripped.replace("_", "").isalpha():
        words = stripped.replace("_", " ")
        return words[:1].upper() + words[1:]
    if key in ("bytes", "size") or key.endswith("_bytes"):
        n = _as_number(stripped)
        return size(n) if n is not None else text
    if key in ("at", "deadline") or key.endswith("_at"):
        moment = parse_datetime(stripped)
        return when(moment) if moment is not None else text
    n = _as_number(stripped)
    if n is None:
        return text
    if key.endswith("_ms"):
        return duration_ms(n)
    if key in ("timeout", "seconds") or key.endswith("_s") or key.endswith("_seconds"):
        return duration_s(n)
    return number(n)


# --- who -----------------------------------------------------------------------------------------

#: How the record's actors (caisey.actors.actor_label) read to a client.
PARTIES = {
    "agent": "the endpoint",
    "system": "Caisey",
    "bridge": "Caisey",
    "policy": "the approval policy",
    "approver": "your designated approver",
    "cli": "an operator",
    "console": "the technician",
    "runtime": "the user at the endpoint",
    "user": "the user at the endpoint",
}


def who(actor: str, names: dict[str, str] | None = None) -> str:
    """ "user:alice" → "Alice Smith" (from ``names``, username → full name) or "alice"; parties by role."""
    if actor.startswith("user:"):
        username = actor.removeprefix("user:")
        return (names or {}).get(username) or username
    if actor.startswith("approver:"):
        return f"your designated approver ({actor.removeprefix('approver:')})"
    return PARTIES.get(actor, actor)
