"""No bearer token in a log line: share (``shr_``), approval (``apl_``) and enrollment (``cet_``)
tokens are cut to their kind and first four characters wherever a log line carries them (Daphne's
access log, Django's "Not Found: /share/..." warnings, anything else). Four characters are what
the rate limits key on (sessions_app/views/public.py): enough to tell guesses apart, useless to
open a link (a token has 43). The key of a password-reset or invitation link
(``/accounts/password/reset/key/<uid>-<key>/``, allauth) is cut whole: it signs a person in."""

from __future__ import annotations

import logging
import re

TOKEN_PREFIXES = ("shr_", "apl_", "cet_")
KEPT_CHARS = 4
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])((?:%s)[A-Za-z0-9_-]{0,%d})[A-Za-z0-9_-]*" % ("|".join(TOKEN_PREFIXES), KEPT_CHARS)
)


_RESET_KEY = re.compile(r"(/password/reset/key/)[^/\s?\"]+")


def redact_tokens(text: str) -> str:
    return _RESET_KEY.sub(r"\1…", _TOKEN.sub(r"\1…", text))


class RedactTokens(logging.Filter):
    """A logging filter (settings.LOGGING) that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
