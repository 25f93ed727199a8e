"""The agent's main loop and where its state lives, shared by the command line (cli.py) and the
Windows service (winservice.py), which both import this module and not each other."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from caisey_agent import platforms, prompt_handlers
from caisey_agent.runner import Agent, AgentStopped
from caisey_agent.state import AgentState

EXIT_STOPPED = 3  # the server refused this endpoint for good; systemd must not restart it


def default_state_dir() -> Path:
    """$CAISEY_AGENT_STATE_DIR, else /var/lib/caisey-agent (root), ~/.local/state/caisey-agent, or
    %ProgramData%\\Caisey on Windows."""
    if os.environ.get("CAISEY_AGENT_STATE_DIR"):
        return Path(os.environ["CAISEY_AGENT_STATE_DIR"])
    return platforms.current().default_state_dir()


def run(
    state: AgentState,
    *,
    backoff_cap: float = 60.0,
    on_started: Callable[[Callable[[], None]], None] | None = None,
    console_signals: bool = True,
) -> int:
    """Run the agent until stopped. ``on_started`` receives a stop function callable from any thread
    (the Windows service's stop request uses it); ``console_signals`` installs the platform's
    Ctrl-C/SIGTERM handling (off in the service, whose thread is not the main thread)."""
    from caisey_agent.handlers import default_handlers

    async def main_loop() -> None:
        agent = Agent(state, backoff_cap=backoff_cap, handlers=default_handlers())
        loop = asyncio.get_running_loop()
        undo = platforms.current().install_stop_handlers(loop, agent.stop) if console_signals else None
        if on_started is not None:
            on_started(lambda: loop.call_soon_threadsafe(agent.stop))
        try:
            await agent.run_forever()
        finally:
            if undo is not None:
                undo()
            await prompt_handlers.close_desktop(agent)  # the service: the users' prompt helpers exit

    try:
        asyncio.run(main_loop())
    except AgentStopped as exc:
        print(f"caisey-agent: stopping: {exc.reason}", file=sys.stderr)
        return EXIT_STOPPED
    return 0
