"""Typed hooks sessions_app offers to the layers above it (integrations).

Every change in a session writes a transcript entry, in the transaction of the change; a layer
above that must act on changes (webhooks: one outbox row per destination that wants the event)
registers here once, in its ``AppConfig.ready()``, instead of every service calling it. Like
``endpoints/hooks.py``: typed, explicit, registered once per function; no Django signal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessions_app.models import TranscriptEntry

TranscriptWrittenHook = Callable[[Sequence["TranscriptEntry"]], None]
_transcript_written: list[TranscriptWrittenHook] = []


def on_transcript_written(func: TranscriptWrittenHook) -> TranscriptWrittenHook:
    """Register ``func(entries)``, called INSIDE the transaction that wrote the entries (each
    entry's tenant is the bound one, or the scope is ``system()``): what it writes commits or rolls
    back with the change. Entries of a bulk insert may belong to many sessions of one tenant."""
    if func not in _transcript_written:
        _transcript_written.append(func)
    return func


def transcript_written_hooks() -> list[TranscriptWrittenHook]:
    return list(_transcript_written)
