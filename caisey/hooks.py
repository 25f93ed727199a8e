"""A hook: functions registered once (in an ``AppConfig.ready()``) that a lower layer calls with a
batch of events, so it hands them up without importing the app that listens. Typed, explicit,
registered once per function; no Django signal. ``caisey.audit_hooks`` and ``caisey.event_hooks``
are the kernel's two."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

E = TypeVar("E")


class Hook(Generic[E]):
    def __init__(self) -> None:
        self._listeners: list[Callable[[Sequence[E]], None]] = []

    def register(self, listener: Callable[[Sequence[E]], None]) -> Callable[[Sequence[E]], None]:
        """Register ``listener`` (once; registering it again is a no-op). Usable as a decorator."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        return listener

    def emit(self, events: Sequence[E]) -> None:
        """Hand ``events`` to every listener, in the caller's transaction; none: nothing is called."""
        if not events:
            return
        for listener in self._listeners:
            listener(events)
