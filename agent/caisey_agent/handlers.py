"""Handlers for server events (actions, prompts). Filled in as those features land."""

from __future__ import annotations

from caisey_agent.runner import Handler


def default_handlers() -> dict[str, Handler]:
    return {}
