"""Handlers for server events: actions and approval prompts."""

from __future__ import annotations

from caisey_agent import protocol as p
from caisey_agent.actions import handle_action_cancel, handle_action_run
from caisey_agent.prompt_handlers import handle_prompt_show, handle_prompt_withdraw
from caisey_agent.runner import Handler


def default_handlers() -> dict[str, Handler]:
    return {
        p.ActionRun.TYPE: handle_action_run,
        p.ActionCancel.TYPE: handle_action_cancel,
        p.PromptShow.TYPE: handle_prompt_show,
        p.PromptWithdraw.TYPE: handle_prompt_withdraw,
    }
