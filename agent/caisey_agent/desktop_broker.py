"""The service's side of desktop prompts: a channel waiting in every active user session.

For each active session the service keeps the session's channel open and waiting for a helper
(:meth:`caisey_agent.platforms.base.Platform.desktop_sessions`; on Windows: the named pipe limited to
SYSTEM and that session's user, see :mod:`caisey_agent.desktop`). The helper reaches it two ways:

- **at logon**: the MSI registers the helper under ``HKLM\\...\\CurrentVersion\\Run``, so every user's
  logon starts one; it connects as soon as the service's channel for its session is there (it retries
  until it is), so a prompt that arrived before the user logged on is shown at logon;
- **when a prompt arrives** and a session has no helper connected (the user closed it, or logged on
  before the agent was installed), the service starts one in the session with the user's token and
  waits for it a moment.

The helper must say hello as the session's user; then it is shown every open prompt, and every
later one. The first decision that arrives for a prompt shown to that helper is applied through the
prompt store (recorded as ``desktop:<user>``) and sent to the server; the other helpers are told to
withdraw it. A helper that goes away is listened for again (a restarted helper reconnects). Sessions
are looked at every few seconds. Whatever fails here leaves the prompt waiting where
``caisey-agent prompts`` answers it.

The service is always the channel's server (it creates the pipe, the helper connects): a pipe
created by the user's process would let that process impersonate the SYSTEM client connecting to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from caisey_agent import desktop
from caisey_agent.prompts import OPEN, HeldPrompt, PromptRefused, PromptStore

log = logging.getLogger("caisey_agent.desktop")
CONNECT_TIMEOUT = 30.0
WATCH_INTERVAL = 5.0
RETRY_DELAY = 5.0
UNREACHABLE_RETRY = 60.0  # a session whose channel could not be created is tried again after this
EXIT_GRACE = 5.0  # at a service stop: how long the helpers are given to close their end


class Channel(Protocol):
    """One session's channel, created by the service, waiting for that session's helper."""

    async def accept(self) -> tuple[Any, Any]:
        """Wait (cancellable) until a helper connects: (reader, writer) with asyncio's stream methods
        (readline; write, drain, close)."""
        ...

    def close(self) -> None: ...


class DesktopSessions(Protocol):
    """The platform's calls (Windows: WTS sessions, the named pipe, CreateProcessAsUser)."""

    def active_sessions(self) -> list[dict]:
        """[{session_id, user, domain}] of the sessions with a user at the desktop."""
        ...

    def listen(self, session_id: int) -> Channel:
        """Create the session's channel (only SYSTEM and the session's user may open it)."""
        ...

    def launch_helper(self, session_id: int) -> None:
        """Start a helper in the session, as its user."""
        ...


@dataclass
class Link:
    session_id: int
    helper: desktop.HelperLink
    writer: Any
    shown: set[str] = field(default_factory=set)
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class DesktopBroker:
    def __init__(
        self,
        store: PromptStore,
        sessions: DesktopSessions,
        *,
        on_decided: Callable[[], Awaitable[None]],
        connect_timeout: float = CONNECT_TIMEOUT,
        watch_interval: float = WATCH_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.on_decided = on_decided
        self.connect_timeout = connect_timeout
        self.watch_interval = watch_interval
        self.retry_delay = retry_delay
        self.links: dict[int, Link] = {}
        self.listeners: dict[int, asyncio.Task] = {}
        self.launched_at: dict[int, float] = {}  # a helper started by the service, not connected yet
        self.refused_at: dict[int, float] = {}  # a helper that connected and was refused
        self.unreachable: dict[int, tuple[float, str]] = {}  # no channel: when, why
        self._changed = asyncio.Event()  # a helper connected
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None
        self.closing = False

    # --- what the runtime calls --------------------------------------------------------------

    def start(self) -> None:
        """Keep a channel waiting in every active session, from now on (idempotent). At the first start
        (the service started), prompts still open are shown: the helpers were told to exit when the
        service last stopped, so one is started where none connects by itself."""
        first = self._watcher is None
        if first or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if first:
            for held in self.store.open_prompts():
                self.start_show(held)

    def start_show(self, held: HeldPrompt) -> None:
        """From the prompt handler: show in the background (the receive loop must not wait on a helper)."""
        task = asyncio.get_running_loop().create_task(self.show(held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def show(self, held: HeldPrompt) -> int:
        """Show ``held`` to every active session's helper, starting one where none is connected;
        returns to how many helpers it was shown."""
        async with self._lock:
            self._refresh()
            await self._launch_missing()
            shown = 0
            for link in list(self.links.values()):
                if await self._send(link, held):
                    shown += 1
        return shown

    async def withdraw(self, prompt_id: str, *, except_session: int | None = None) -> None:
        for link in list(self.links.values()):
            if prompt_id in link.shown and link.session_id != except_session:
                link.shown.discard(prompt_id)
                try:
                    await link.helper.withdraw(prompt_id)
                except (OSError, ConnectionError) as exc:
                    log.info("session %s: withdraw not delivered: %s", link.session_id, exc)

    async def close(self, *, helpers_exit: bool = False, grace: float = EXIT_GRACE) -> None:
        """Stop serving. ``helpers_exit`` (the service stops): first tell every connected helper to exit
        and wait up to ``grace`` for them to close their end, so that an upgrade or uninstall finds no
        ``pythonw.exe`` running from Program Files. Every stop does this, a plain restart too: the
        service cannot tell why it is stopped, and a helper is started again when a prompt needs one
        (and at the next logon)."""
        self.closing = True
        if helpers_exit:
            links = list(self.links.values())
            for link in links:
                try:
                    await asyncio.wait_for(link.helper.exit("the service is stopping"), grace)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    log.info("session %s: exit not delivered: %s", link.session_id, exc)
            try:
                await asyncio.wait_for(asyncio.gather(*(link.gone.wait() for link in links)), grace)
            except TimeoutError:
                log.warning(
                    "desktop helpers still connected after %.0f s: %s",
                    grace,
                    [link.session_id for link in links if not link.gone.is_set()],
                )
        tasks = [t for t in (self._watcher, *self.listeners.values(), *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self.links.values()):
            self._drop(link)

    # --- sessions and their channels -----------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            self._refresh()
            await asyncio.sleep(self.watch_interval)

    def _refresh(self) -> None:
        """A listener for every active session; none for sessions that ended."""
        try:
            sessions = {s["session_id"]: s["user"] for s in self.sessions.active_sessions()}
        except Exception as exc:  # noqa: BLE001 - no session list: the CLI path stays
            log.warning("cannot list the user sessions: %s", exc)
            return
        for sid, task in list(self.listeners.items()):
            if sid not in sessions or task.done():
                task.cancel()
                del self.listeners[sid]
        for sid, user in sessions.items():
            failed_at = self.unreachable.get(sid, (float("-inf"), ""))[0]
            if sid not in self.listeners and time.monotonic() - failed_at >= UNREACHABLE_RETRY:
                self.listeners[sid] = asyncio.get_running_loop().create_task(self._listen(sid, user))

    async def _listen(self, session_id: int, user: str) -> None:
        """The session's channel, over and over: wait for a helper, serve it until it goes away."""
        while True:
            try:
                channel = self.sessions.listen(session_id)
            except OSError as exc:  # e.g. the session's token is not there (logging off), no WTS (Wine)
                if self.unreachable.get(session_id, (0.0, ""))[1] != str(exc):
                    log.warning("session %s (%s): no channel: %s", session_id, user, exc)
                self.unreachable[session_id] = (time.monotonic(), str(exc))
                return  # tried again after UNREACHABLE_RETRY
            self.unreachable.pop(session_id, None)
            writer = None
            try:
                reader, writer = await channel.accept()
                helper = desktop.HelperLink(reader, writer, expected_user=user)
                await asyncio.wait_for(helper.handshake(), self.connect_timeout)
            except (TimeoutError, desktop.ChannelError, OSError, ConnectionError) as exc:
                log.warning("session %s (%s): helper refused: %s", session_id, user, exc)
                (writer or channel).close()
                self.refused_at[session_id] = time.monotonic()
                self._changed.set()
                await asyncio.sleep(self.retry_delay)
                continue
            except BaseException:
                (writer or channel).close()
                raise
            log.info("session %s: desktop helper connected for %s", session_id, helper.user)
            link = Link(session_id=session_id, helper=helper, writer=writer)
            self.links[session_id] = link
            self.launched_at.pop(session_id, None)
            self._changed.set()
            for held in self.store.open_prompts():  # what arrived before this helper did
                await self._send(link, held)
            await self._serve(link)
            if self.closing:
                return

    async def _launch_missing(self) -> None:
        """Start a helper in each session that has none connected (not again while one started less
        than the timeout ago may still be coming), then wait up to the timeout for them."""
        await asyncio.sleep(0)  # listeners just created make their channel first (or fail to)
        started = time.monotonic()
        waiting: list[tuple[int, float]] = []
        for sid in [s for s, task in self.listeners.items() if s not in self.links and not task.done()]:
            launched = self.launched_at.get(sid)
            if launched is None or started - launched >= self.connect_timeout:
                try:
                    self.sessions.launch_helper(sid)
                except (OSError, RuntimeError) as exc:  # e.g. WTSQueryUserToken off SYSTEM
                    log.warning("session %s: cannot start the desktop helper: %s", sid, exc)
                    continue
                self.launched_at[sid] = launched = started
            waiting.append((sid, launched))
        deadline = started + self.connect_timeout
        while True:
            pending = [
                sid
                for sid, launched in waiting
                if sid not in self.links
                and sid in self.listeners
                and not self.listeners[sid].done()
                and self.refused_at.get(sid, float("-inf")) < launched
            ]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    # --- helpers ---------------------------------------------------------------------------------

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
        if self.store.find(held.prompt_id).state == "delivered":
            self.store.acknowledge(held.prompt_id)
            await self._report()  # the acknowledgement: a user has been shown it
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
            self._drop(link)

    async def _report(self) -> None:
        try:
            await self.on_decided()
        except Exception:  # noqa: BLE001 - the store keeps it: the prompt watcher sends it later
            log.exception("sending the prompt update failed; it is sent later")

    def _drop(self, link: Link) -> None:
        if self.links.get(link.session_id) is link:
            del self.links[link.session_id]
        link.writer.close()
        link.gone.set()
