"""The runtime side of approval prompts: store before showing, withdraw, and tell the server."""

from __future__ import annotations

import asyncio
import logging
import time

from caisey_agent import dialog, platforms
from caisey_agent import protocol as p
from caisey_agent.desktop_broker import DesktopBroker
from caisey_agent.prompts import PromptRefused, PromptStore

log = logging.getLogger("caisey_agent.prompts")
WATCH_INTERVAL = 1.0


def store_of(agent) -> PromptStore:
    if getattr(agent, "prompt_store", None) is None:
        agent.prompt_store = PromptStore(agent.state.db)
    return agent.prompt_store


async def handle_prompt_show(agent, env: p.Envelope) -> None:
    store = store_of(agent)
    if not store.store(env.body):
        return  # already held: a replay changes nothing
    held = store.find(env.body.prompt_id)
    log.info("approval requested: %s (answer with `caisey-agent prompts approve %s`)", held.title, held.prompt_id[:8])
    if dialog.available():
        asyncio.get_running_loop().create_task(_ask_in_dialog(agent, held))
        return
    broker = broker_of(agent)
    if broker is not None:
        broker.start_show(held)  # the Windows service: helpers in the users' sessions


def broker_of(agent) -> DesktopBroker | None:
    """The desktop broker where the platform reaches users' sessions (the Windows service), else None."""
    if not hasattr(agent, "desktop_broker"):
        sessions = platforms.current().desktop_sessions()
        agent.desktop_broker = (
            DesktopBroker(store_of(agent), sessions, on_decided=lambda: send_unsent(agent)) if sessions else None
        )
    return agent.desktop_broker


async def _ask_in_dialog(agent, held) -> None:
    store = store_of(agent)
    store.acknowledge(held.prompt_id)
    answer = await dialog.ask(held, timeout=max(1.0, held.deadline - time.time()))
    if answer is None:
        return
    try:
        store.decide(held.prompt_id, approve=answer)
    except PromptRefused as exc:
        log.info("dialog answer not applied: %s", exc)
    await send_unsent(agent)


async def handle_prompt_withdraw(agent, env: p.Envelope) -> None:
    store_of(agent).withdraw(env.body.prompt_id)
    broker = getattr(agent, "desktop_broker", None)
    if broker is not None:
        await broker.withdraw(env.body.prompt_id)
    log.info("prompt %s withdrawn by the server (%s)", env.body.prompt_id[:8], env.body.reason)


async def close_desktop(agent) -> None:
    """The agent stops: the Windows service tells the users' prompt helpers to exit (see
    :meth:`DesktopBroker.close`)."""
    broker = getattr(agent, "desktop_broker", None)
    if broker is not None:
        await broker.close(helpers_exit=True)


async def send_unsent(agent) -> None:
    """Send what the user did (here, or through the CLI in another process) as durable updates."""
    store = store_of(agent)
    for held in store.unsent_updates():
        frame_id = await agent.send_durable(store.update_for(held))
        store.mark_sent(held.prompt_id, held.state, frame_id)


async def watch(agent) -> None:
    broker = broker_of(agent)
    if broker is not None:
        broker.start()  # the Windows service: a channel waiting in each user session (logon helpers)
    while True:
        try:
            await send_unsent(agent)
        except Exception:
            log.exception("sending prompt updates failed; retrying")
        await asyncio.sleep(WATCH_INTERVAL)
