"""What each platform implementation provides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path


class Platform:
    name = "base"

    def default_state_dir(self) -> Path:
        raise NotImplementedError

    def prepare_process(self) -> None:
        """Once, before anything else runs: process-wide adjustments the platform needs."""

    def secure_dir(self, path: Path) -> None:
        """Restrict the state folder to the agent (and administrators)."""
        raise NotImplementedError

    def secure_file(self, path: Path) -> None:
        """Restrict one file in the state folder (SQLite's own -wal/-shm files included)."""
        raise NotImplementedError

    def protect_secret(self, value: str) -> str:
        """The form a secret is stored in (reversible only on this machine where the platform can)."""
        return value

    def unprotect_secret(self, stored: str) -> str:
        return stored

    def install_stop_handlers(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Callable[[], None]:
        """Call ``stop`` (on the loop) on the platform's console/termination requests; returns an undo."""
        raise NotImplementedError

    def desktop_sessions(self):
        """The users' sessions a service reaches with desktop prompt helpers
        (:class:`caisey_agent.desktop_broker.DesktopSessions`), or None where prompts are shown
        otherwise (a dialog on the agent's own display, or ``caisey-agent prompts``)."""
        return None
