"""Linux, macOS and the BSDs: mode bits and Unix signals."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

from caisey_agent.platforms.base import Platform


class PosixPlatform(Platform):
    name = "posix"

    def default_state_dir(self) -> Path:
        geteuid = getattr(os, "geteuid", None)
        if geteuid is not None and geteuid() == 0:
            return Path("/var/lib/caisey-agent")
        return Path.home() / ".local" / "state" / "caisey-agent"

    def secure_dir(self, path: Path) -> None:
        os.chmod(path, 0o700)

    def secure_file(self, path: Path) -> None:
        os.chmod(path, 0o600)

    def install_stop_handlers(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Callable[[], None]:
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
            installed.append(sig)

        def undo() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return undo
