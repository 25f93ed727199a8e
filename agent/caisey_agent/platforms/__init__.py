"""The one seam between the agent and its operating system.

Everything that differs between POSIX and Windows for the agent's own running
(where its state lives, how that folder is protected, how the stored credential is
protected, how a stop request arrives) goes through :func:`current`. The Windows
implementation imports pywin32 lazily, inside its methods, so this package imports
on every platform and tests can drive the Windows code paths on Linux by replacing
the few methods that call the Windows API.
"""

from __future__ import annotations

import sys

from caisey_agent.platforms.base import Platform

_override: Platform | None = None


def is_windows() -> bool:
    """Read at call time (not import time), so tests can simulate Windows with monkeypatch."""
    return sys.platform == "win32"


def current() -> Platform:
    if _override is not None:
        return _override
    if is_windows():
        from caisey_agent.platforms.windows import WindowsPlatform

        return WindowsPlatform()
    from caisey_agent.platforms.posix import PosixPlatform

    return PosixPlatform()


def set_override(platform: Platform | None) -> None:
    """Tests only: make :func:`current` answer ``platform`` (None restores detection)."""
    global _override
    _override = platform


__all__ = ["Platform", "current", "is_windows", "set_override"]
