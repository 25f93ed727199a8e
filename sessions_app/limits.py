"""The limits of what a technician may ask, one constant each, used by the services that enforce
them, the console's forms and the API's serializers alike (tests/sessions_app/test_forms.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

#: The longest an action may wait for an away endpoint (console: hours, API: seconds).
MAX_EXPIRY = timedelta(days=30)
#: The most steps one batch may hold.
MAX_BATCH = 20
#: The most endpoints one bulk run may target.
MAX_BULK_ENDPOINTS = 1000
#: How long a bulk run's actions wait for away endpoints unless told otherwise, and the shortest.
DEFAULT_BULK_EXPIRY = timedelta(hours=4)
MIN_BULK_EXPIRY = timedelta(minutes=1)
#: A note's text; a session's reason, close reason and follow-up note.
NOTE_MAX_CHARS = 10_000
REASON_MAX_CHARS = 500
RUNBOOK_NAME_MAX_CHARS = 200
RUNBOOK_DESCRIPTION_MAX_CHARS = 2000


def configured_duration(name: str) -> timedelta:
    """A duration the operator configures in ``settings.CAISEY`` (seconds), e.g. ``LAZY_AFTER_IDLE_S``."""
    value = settings.CAISEY[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImproperlyConfigured(f"CAISEY[{name!r}] must be a number of seconds, not {value!r}")
    return timedelta(seconds=value)
