"""A desktop dialog for a prompt, when the machine has a graphical session to show it in.

Best effort by design: the command-line path (`caisey-agent prompts`) always works,
and a dialog that cannot be shown leaves the prompt waiting there. Linux uses zenity
or kdialog on the session's display; Windows and macOS dialogs are not built yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

from caisey_agent import protocol as p
from caisey_agent.prompts import HeldPrompt

log = logging.getLogger("caisey_agent.dialog")


def available() -> bool:
    if os.environ.get("CAISEY_AGENT_NO_DIALOG"):
        return False
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return has_display and bool(shutil.which("zenity") or shutil.which("kdialog"))


async def ask(prompt: HeldPrompt, timeout: float) -> bool | None:
    """Show the prompt; True approve, False deny, None when closed unanswered or not shown."""
    text = p.visible(
        f"{prompt.title}\n\nAsked by {prompt.requested_by} ({prompt.organisation})\n\nWill run:\n{prompt.detail}"
    )
    if shutil.which("zenity"):
        argv = [
            "zenity",
            "--question",
            "--no-markup",  # the text is shown as written: no Pango markup can restyle or hide part of it
            "--title=Caisey approval request",
            f"--text={text}",
            "--ok-label=Approve",
            "--cancel-label=Deny",
            f"--timeout={max(1, int(timeout))}",
        ]
    elif shutil.which("kdialog"):
        argv = [
            "kdialog",
            "--title",
            "Caisey approval request",
            "--yesno",
            text,
            "--yes-label",
            "Approve",
            "--no-label",
            "Deny",
        ]
    else:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(*argv)
        code = await asyncio.wait_for(proc.wait(), timeout=timeout + 5)
    except (TimeoutError, OSError) as exc:
        log.warning("could not show the prompt dialog: %s", exc)
        return None
    return {0: True, 1: False}.get(code)  # zenity: 5 = timed out, others = closed
