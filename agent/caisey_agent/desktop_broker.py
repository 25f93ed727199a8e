"""The service's side of desktop prompts: when a prompt arrives, reach every active user session.

For each active session that has no helper connected yet, the session's channel is opened through
the platform (:meth:`caisey_agent.platforms.base.Platform.desktop_sessions`; on Windows: the named
pipe limited to SYSTEM and that user, then the helper started in the session with the user's token,
see :mod:`caisey_agent.desktop`). The helper must say hello as the session's user; then it is shown
every open prompt, and every later one. The first decision that arrives for a prompt shown to that
helper is applied through the prompt store (recorded as ``desktop:<user>``) and sent to the server;
the other helpers are told to withdraw it. A helper that goes away (the user logged off) is dropped
and reached again at the next prompt. Whatever fails here leaves the prompt waiting where
``caisey-agent prompts`` answers it.

Known limit: a user who logs on after a prompt arrived is reached at the next prompt, not at logon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from caisey_agent import desktop
from caisey_agent.prompts import OPEN, HeldPrompt, PromptRefused, PromptStore

log = logging.getLogger("caisey_agent.desktop")
CONNECT_TIMEOUT = 30.0


class DesktopSessions(Protocol):
    """The platform's calls (Windows: WTS sessions, the named pipe, CreateProcessAsUser)."""

    def active_sessions(self) -> list[dict]:
        """[{session_id, user, domain}] of the sessions with a user at the desktop."""
        ...

    async def open_channel(self, session_id: int, *, timeout: float) -> tuple[Any, Any]:
        """Create the session's channel, start the helper in the session, wait for it to connect:
        (reader, writer) with asyncio's stream methods (readline; write, drain, close)."""
        ...


@dataclass
class Link:
    session_id: int
    helper: desktop.HelperLink
    writer: Any
    shown: set[str] = field(default_factory=set)
    task: asyncio.Task | None = None


class DesktopBroker:
    def __init__(
        self,
        store: PromptStore,
        sessions: DesktopSessions,
        *,
        on_decided: Callable[[], Awaitable[None]],
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.on_decided = on_decided
        self.connect_timeout = connect_timeout
        self.links: dict[int, Link] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def start_show(self, held: HeldPrompt) -> None:
        """From the prompt handler: show in the background (the receive loop must not wait on a helper)."""
        task = asyncio.get_running_loop().create_task(self.show(held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def show(self, held: HeldPrompt) -> int:
        """Show ``held`` to every active session's helper; returns to how many it was shown."""
        async with self._lock:
            await self._connect_sessions()
            shown = 0
            for link in list(self.links.values()):
                if await self._send(link, held):
                    shown += 1
        if shown:
            self.store.acknowledge(held.prompt_id)
            await self._report()  # the acknowledgement: a user has been shown it
        return shown

    async def withdraw(self, prompt_id: str, *, except_session: int | None = None) -> None:
        for link in list(self.links.values()):
            if prompt_id in link.shown and link.session_id != except_session:
                link.shown.discard(prompt_id)
                try:
                    await link.helper.withdraw(prompt_id)
                except (OSError, ConnectionError) as exc:
                    log.info("session %s: withdraw not delivered: %s", link.session_id, exc)

    async def close(self) -> None:
        for link in list(self.links.values()):
            self._drop(link)
        for task in list(self._tasks):
            task.cancel()

    # --- inside ------------------------------------------------------------------------------

    async def _connect_sessions(self) -> None:
        try:
            sessions = self.sessions.active_sessions()
        except Exception as exc:  # noqa: BLE001 - no session list: the CLI path stays
            log.warning("cannot list the user sessions: %s", exc)
            return
        for session in sessions:
            sid = session["session_id"]
            if sid in self.links:
                continue
            link = await self._connect(sid, session["user"])
            if link is None:
                continue
            self.links[sid] = link
            for held in self.store.open_prompts():
                await self._send(link, held)
            link.task = asyncio.get_running_loop().create_task(self._serve(link))

    async def _connect(self, session_id: int, user: str) -> Link | None:
        writer = None
        try:
            reader, writer = await self.sessions.open_channel(session_id, timeout=self.connect_timeout)
            helper = desktop.HelperLink(reader, writer, expected_user=user)
            await asyncio.wait_for(helper.handshake(), self.connect_timeout)
        except (TimeoutError, desktop.ChannelError, OSError, ConnectionError) as exc:
            log.warning("session %s (%s): no desktop helper: %s", session_id, user, exc)
            if writer is not None:
                writer.close()
            return None
        log.info("session %s: desktop helper connected for %s", session_id, helper.user)
        return Link(session_id=session_id, helper=helper, writer=writer)

    def _still_open(self, prompt_id: str) -> bool:
        """Decided meanwhile (by another session's helper, the CLI) or withdrawn: not shown any more."""
        try:
            held = self.store.find(prompt_id)
        except PromptRefused:
            return False
        return held.state in OPEN and not held.expired

    async def _send(self, link: Link, held: HeldPrompt) -> bool:
        if held.prompt_id in link.shown:
            return True
        if not self._still_open(held.prompt_id):
            return False
        try:
            await link.helper.show(held)
        except (OSError, ConnectionError) as exc:
            log.info("session %s: helper gone: %s", link.session_id, exc)
            self._drop(link)
            return False
        link.shown.add(held.prompt_id)
        return True

    async def _serve(self, link: Link) -> None:
        """Read one helper's decisions until it goes away."""
        try:
            while True:
                decision = await link.helper.next_decision()
                if decision is None:
                    break
                try:
                    desktop.apply_decision(self.store, decision, link.shown)
                except PromptRefused as exc:
                    log.info("session %s: decision not applied: %s", link.session_id, exc)
                    continue
                await self._report()
                await self.withdraw(decision.prompt_id, except_session=link.session_id)
        except (desktop.ChannelError, OSError, ConnectionError) as exc:
            log.warning("session %s: helper dropped: %s", link.session_id, exc)
        finally:
            self._drop(link, from_task=True)

    async def _report(self) -> None:
        try:
            await self.on_decided()
        except Exception:  # noqa: BLE001 - the store keeps it: the prompt watcher sends it later
            log.exception("sending the prompt update failed; it is sent later")

    def _drop(self, link: Link, *, from_task: bool = False) -> None:
        if self.links.get(link.session_id) is link:
            del self.links[link.session_id]
        link.writer.close()
        if link.task is not None and not from_task:
            link.task.cancel()
