"""No bearer token in a log line: share (``shr_``), approval (``apl_``) and enrollment (``cet_``)
tokens are cut to their kind and first four characters wherever a log line carries them (Daphne's
access log, Django's "Not Found: /share/..." warnings, anything else). Four characters are what
the rate limits key on (sessions_app/views/public.py): enough to tell guesses apart, useless to
open a link (a token has 43)."""

from __future__ import annotations

import logging
import re

TOKEN_PREFIXES = ("shr_", "apl_", "cet_")
KEPT_CHARS = 4
_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])((?:%s)[A-Za-z0-9_-]{0,%d})[A-Za-z0-9_-]*" % ("|".join(TOKEN_PREFIXES), KEPT_CHARS)
)


def redact_tokens(text: str) -> str:
    return _TOKEN.sub(r"\1…", text)


class RedactTokens(logging.Filter):
    """A logging filter (settings.LOGGING) that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
