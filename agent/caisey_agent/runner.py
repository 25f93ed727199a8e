"""The agent service: one WebSocket to the bridge, kept up forever.

Reconnects with capped exponential backoff and full jitter, so that a
thousand agents returning after a server restart spread out instead of
arriving at once. Stops only when told to, or when the server says this
endpoint was revoked (or its credential is unknown): retrying cannot help then.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from caisey_agent import __version__, actions, machine, prompt_handlers, transport
from caisey_agent import protocol as p
from caisey_agent.state import AgentState, Identity

log = logging.getLogger("caisey_agent")

# The server names the heartbeat cadence; the agent keeps it within these bounds whatever it is
# told: 0 would spin the loop and flood the server, hours would leave it looking offline. The
# server's own defaults are 10 s (active) and 60 s (lazy).
MIN_HEARTBEAT_S = 1.0
MAX_HEARTBEAT_S = 3600.0
DEFAULT_HEARTBEAT_S = 60.0


def sane_interval(asked: float) -> float:
    """The heartbeat interval to use when the server asks for ``asked`` seconds."""
    interval = DEFAULT_HEARTBEAT_S if math.isnan(asked) else min(max(asked, MIN_HEARTBEAT_S), MAX_HEARTBEAT_S)
    if interval != asked:
        log.warning(
            "the server asked for a heartbeat every %ss; using %ss (allowed: %s..%s s)",
            asked,
            interval,
            MIN_HEARTBEAT_S,
            MAX_HEARTBEAT_S,
        )
    return interval


# Above the lazy heartbeat (60 s): the heartbeat's ack already proves the path, and Daphne
# (run with --ping-interval 90) then never needs to ping a healthy agent either.
KEEPALIVE_PING = 120
# A server restarting under thousands of agents queues their handshakes (Daphne waits 30 s).
OPEN_TIMEOUT = 30
# How long to wait for the server's welcome (its own deadline for a hello is 30 s).
HELLO_WAIT = 60
# How often a heartbeat carries the machine context when the server does not say (Welcome.context_every).
CONTEXT_EVERY = 300.0

FATAL_CLOSE_CODES = {
    p.CLOSE_REVOKED: "this endpoint was revoked by the MSP",
    p.CLOSE_UNAUTHENTICATED: "the server does not recognise this endpoint's credential; re-enroll",
}


class AgentStopped(Exception):
    """The agent must not retry; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def bridge_url(server: str) -> str:
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/agent/", "", ""))


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


Handler = Callable[["Agent", p.Envelope], Awaitable[None]]


class Agent:
    def __init__(
        self,
        state: AgentState,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        handlers: dict[str, Handler] | None = None,
    ) -> None:
        identity = state.identity()
        if identity is None:
            raise AgentStopped("not enrolled: run `caisey-agent enroll --server URL --token TOKEN` first")
        self.identity: Identity = identity
        self.state = state
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.handlers: dict[str, Handler] = handlers or {}
        self.mode = "lazy"
        self.interval = DEFAULT_HEARTBEAT_S
        self.ws: ClientConnection | None = None
        self.prompt_store = None
        self.stopping = asyncio.Event()
        self.beat_now = asyncio.Event()  # a new cadence starts with a beat, not after the old sleep
        self.connected = asyncio.Event()
        self.context_every = CONTEXT_EVERY
        self.context_sent_at = 0.0  # monotonic: the hello's context counts

    # --- lifecycle --------------------------------------------------------------

    async def run_forever(self) -> None:
        attempt = 0
        url = bridge_url(self.identity.server)
        try:
            transport.check_server(url, insecure=self.identity.insecure)
        except transport.TransportError as exc:
            raise AgentStopped(f"{exc} (enroll again with --replace)") from None
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                await self._session(url)
            except AgentStopped:
                raise
            except (
                TimeoutError,
                OSError,
                InvalidHandshake,
                InvalidURI,
                ConnectionClosed,
                transport.TransportError,
            ) as exc:
                log.warning("connection to %s lost: %s", url, _describe(exc))
            if self.stopping.is_set():
                break
            if time.monotonic() - started > 30:
                attempt = 0  # it was a healthy connection: start the backoff afresh
            delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
            attempt += 1
            log.info("reconnecting in %.1fs (attempt %d)", delay, attempt)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        if self.ws is not None:
            asyncio.ensure_future(self.ws.close())

    async def _session(self, url: str) -> None:
        tls = urlsplit(url).scheme == "wss"
        async with connect(
            url,
            open_timeout=OPEN_TIMEOUT,
            max_size=p.MAX_FRAME_BYTES * 4,
            ping_interval=KEEPALIVE_PING,
            ping_timeout=30,
            ssl=transport.ssl_context(self.identity.ca_bundle) if tls else None,
        ) as ws:
            if tls and self.identity.key_pin:  # before the hello: it carries the credential
                transport.check_pin(ws.transport.get_extra_info("ssl_object"), self.identity.key_pin)
            self.ws = ws
            try:
                await self._handshake(ws)
                self.connected.set()
                await self._replay_outbox()
                await actions.recover_interrupted(self)
                tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(prompt_handlers.watch(self))]
                try:
                    async for raw in ws:
                        await self._on_frame(raw)
                finally:
                    for task in tasks:
                        task.cancel()
            finally:
                self.connected.clear()
                self.ws = None
                self._raise_if_fatal(ws)

    def _raise_if_fatal(self, ws: ClientConnection) -> None:
        code = ws.close_code
        if code in FATAL_CLOSE_CODES:
            reason = ws.close_reason or FATAL_CLOSE_CODES[code]
            raise AgentStopped(
                f"{FATAL_CLOSE_CODES[code]} (close code {code}{': ' + reason if reason != FATAL_CLOSE_CODES[code] else ''})"
            )

    async def _handshake(self, ws: ClientConnection) -> None:
        hello = p.Hello(
            endpoint_id=self.identity.endpoint_id,
            credential=self.identity.credential,
            agent_version=__version__,
            machine=await asyncio.to_thread(machine.context, self.identity.hostname),
            mode=self.mode,
            prompts=self.prompt_reports(),
        )
        self.context_sent_at = time.monotonic()
        await ws.send(p.encode(p.envelope(hello)))
        while True:
            env = p.decode(await asyncio.wait_for(ws.recv(), timeout=HELLO_WAIT), accept=p.SERVER_TO_AGENT)
            if env.type == p.Welcome.TYPE:
                self.mode = env.body.mode
                self.interval = sane_interval(env.body.heartbeat_interval)
                self.context_every = env.body.context_every or CONTEXT_EVERY
                log.info(
                    "connected as %s, mode %s, heartbeat every %ss", self.identity.endpoint_id, self.mode, self.interval
                )
                return
            if env.type == p.Error.TYPE:
                log.error("server refused hello: %s: %s", env.body.code, env.body.detail)
                # The close frame that follows carries the code that decides whether to retry.
                await ws.wait_closed()
                self._raise_if_fatal(ws)
                raise ConnectionError(f"hello refused: {env.body.code}")

    # --- sending ----------------------------------------------------------------------

    async def send_durable(self, body) -> str:
        """Send a frame the server must acknowledge; kept and replayed until it does."""
        env = p.envelope(body)
        frame = p.encode(env)
        self.state.outbox_add(env.id, frame)
        await self._send_raw(frame)
        return env.id

    async def send(self, body, *, id: str | None = None) -> None:
        await self._send_raw(p.encode(p.envelope(body, id=id)))

    async def _send_raw(self, frame: str) -> None:
        ws = self.ws
        if ws is None:
            return  # kept in the outbox; replayed after the next handshake
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass

    async def _replay_outbox(self) -> None:
        pending = self.state.outbox_pending()
        if pending:
            log.info("replaying %d unacknowledged frames", len(pending))
        for _, frame in pending:
            await self._send_raw(frame)

    async def _heartbeats(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.beat_now.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self.beat_now.clear()
            metrics = machine.metrics() if self.mode == "active" else {}
            context: dict = {}
            if time.monotonic() - self.context_sent_at >= self.context_every:
                context = await asyncio.to_thread(machine.context, self.identity.hostname)
                self.context_sent_at = time.monotonic()
            await self.send(
                p.Heartbeat(
                    interval=self.interval,
                    mode=self.mode,
                    metrics=metrics,
                    prompts=self.prompt_reports(),
                    machine=context,
                )
            )

    def prompt_reports(self) -> list[p.PromptReport]:
        return prompt_handlers.store_of(self).reports()

    # --- receiving ----------------------------------------------------------------------

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            env = p.decode(raw, accept=p.SERVER_TO_AGENT, max_bytes=p.MAX_FRAME_BYTES * 4)
        except p.ProtocolError as exc:
            log.warning("ignoring bad frame from server: %s", exc)
            return
        if env.type == p.Ack.TYPE:
            self.state.outbox_ack(env.body.ref)
            prompt_handlers.store_of(self).on_ack(env.body.ref)
            return
        if env.type == p.Error.TYPE:
            log.warning("server error %s: %s (ref %s)", env.body.code, env.body.detail, env.body.ref)
            return
        if env.type == p.Welcome.TYPE:
            return
        # A server event: recorded before acting, so a replay is acknowledged but not acted on twice.
        first_time = self.state.record_event(env.id, env.type)
        if first_time:
            await self._dispatch(env)
        await self.send(p.Ack(ref=env.id, duplicate=not first_time))

    async def _dispatch(self, env: p.Envelope) -> None:
        if env.type == p.ModeSet.TYPE:
            self.mode = env.body.mode
            self.interval = sane_interval(env.body.heartbeat_interval)
            log.info("mode set to %s, heartbeat every %ss", self.mode, self.interval)
            # The server expects the new cadence from now: a session just opened must not see the
            # endpoint offline while the old, longer sleep runs out.
            self.beat_now.set()
            return
        handler = self.handlers.get(env.type)
        if handler is None:
            log.warning("no handler for %s; acknowledged and ignored", env.type)
            return
        await handler(self, env)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        return f"closed ({frame.code} {frame.reason})" if frame else "closed without a close frame"
    return f"{type(exc).__name__}: {exc}"
