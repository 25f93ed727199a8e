"""The agent's socket: handshake, heartbeats, and routing agent frames to their handlers.

Thin by design: parse, authenticate, hand the database work to the process's group commit
(``bridge/batcher.py``: many sockets' frames per transaction), acknowledge once it committed.
Every frame that cannot be accepted gets an error frame and a counter, never a crash and
never a state change.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from bridge import batcher, framerate, gc_pacing, last_seen, metrics, notify, services
from bridge.groups import agent_group
from caisey_agent import protocol as p
from endpoints.models import AgentMode

log = logging.getLogger(__name__)


def _endpoint_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


class AgentConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.endpoint = None
        self.connection_id = uuid.uuid4().hex
        client = self.scope.get("client") or ("unknown", 0)
        self.remote_ip = str(client[0])
        self.group = None
        self.group_joined_at = 0.0
        self.last_reports: list = []
        self.reconciled_at = 0.0
        self.frames = framerate.TokenBucket(
            rate_per_s=settings.CAISEY["AGENT_FRAMES_PER_S"], burst=settings.CAISEY["AGENT_FRAME_BURST"]
        )
        self.over_rate = False
        gc_pacing.ensure_started()
        notify.attach_to_running_loop()
        await self.accept()
        self.hello_deadline = asyncio.get_running_loop().create_task(self._close_without_hello())

    async def dispatch(self, message) -> None:
        """Channels' own dispatch first runs ``close_old_connections`` on the sync thread, for every
        message: a trip to the thread where all database work of the process waits its turn, for
        every heartbeat and doorbell (7 % of a fan-out's samples). This socket touches the database
        only through the group commit, whose trips close old connections themselves."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _close_without_hello(self) -> None:
        await asyncio.sleep(settings.CAISEY["HELLO_TIMEOUT_S"])
        if self.endpoint is None:
            await self.send_error("hello_timeout", "no hello received in time")
            await self.close(code=p.CLOSE_HELLO_TIMEOUT)

    async def disconnect(self, code) -> None:
        if self.hello_deadline is not None:
            self.hello_deadline.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.endpoint is None:
            return
        last_seen.buffer.forget(self.endpoint.pk)
        await database_sync_to_async(services.agent_disconnected)(
            endpoint_id=self.endpoint.pk, connection_id=self.connection_id, close_code=code
        )

    # --- frames from the agent ------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.over_rate:
            return  # closing: what else arrives meanwhile is dropped
        if not self.frames.take():
            await self.close_over_rate()
            return
        raw = text_data if text_data is not None else bytes_data
        try:
            env = p.decode(raw, accept=p.AGENT_TO_SERVER, max_bytes=settings.CAISEY["MAX_FRAME_BYTES"])
        except p.ProtocolError as exc:
            await self.reject(exc.code, exc.detail)
            return
        if self.endpoint is None:
            if env.type != p.Hello.TYPE:
                await self.reject("not_authenticated", "the first frame must be hello", ref=env.id)
                return
            await self.on_hello(env)
            return
        # Any frame is proof of life, not only a heartbeat (coalesced: no write per frame).
        last_seen.buffer.touch(self.endpoint.pk)
        if env.type == p.Hello.TYPE:
            await self.reject("already_authenticated", "hello was already received", ref=env.id)
        elif env.type == p.Heartbeat.TYPE:
            await self.on_heartbeat(env)
        elif env.type == p.Ack.TYPE:
            try:
                await batcher.submit(batcher.Unit.ack(endpoint_id=self.endpoint.pk, message_id=env.body.ref))
            except Exception:  # not applied: the row stays sent, and is sent again after its ack timeout
                log.exception("applying the ack of %s from %s failed", env.body.ref, self.endpoint.pk)
        else:
            await self.on_domain_frame(env)

    async def close_over_rate(self) -> None:
        self.over_rate = True
        metrics.frames_over_rate.inc()
        endpoint = self.endpoint.pk if self.endpoint is not None else f"unauthenticated from {self.remote_ip}"
        log.warning("agent socket of %s sent frames faster than allowed: closing it", endpoint)
        detail = (
            f"more than {settings.CAISEY['AGENT_FRAMES_PER_S']:g} frames/s "
            f"(burst {settings.CAISEY['AGENT_FRAME_BURST']}): connection closed"
        )
        await self.send_error("rate_limited", detail)
        # Daphne 4 sends the code without the reason text; the error frame above carries it.
        await self.close(code=p.CLOSE_RATE_LIMITED, reason="frame rate limit exceeded")

    async def on_hello(self, env: p.Envelope) -> None:
        hello: p.Hello = env.body
        if self.hello_deadline is None:  # a refused hello's socket is closing; one hello per socket
            await self.reject("already_authenticated", "hello was already received", ref=env.id)
            return
        self.hello_deadline.cancel()  # it bounds the wait for a hello, not the time to process one
        self.hello_deadline = None  # and is not kept for the life of the socket
        # Join the endpoint's group before claiming its outbox, so no doorbell rung in between is
        # missed (the consumer handles it after this hello). A refused hello closes the socket.
        claimed = _endpoint_uuid(hello.endpoint_id)
        if claimed is not None:
            self.group = agent_group(claimed)
            await self.join_group()
        try:
            handshake = await batcher.submit(
                batcher.Unit.hello(hello=hello, connection_id=self.connection_id, remote_ip=self.remote_ip)
            )
        except services.HandshakeRefused as refused:
            metrics.auth_failures.labels(refused.reason).inc()
            await self.send_error(refused.code, refused.detail, ref=env.id)
            await self.close(code=refused.close_code)
            return
        except Exception:  # nothing of it was kept: the agent reconnects and says hello again
            log.exception("the hello of a connection from %s could not be applied", self.remote_ip)
            await self.send_error("server_error", "the hello could not be applied; connect again later", ref=env.id)
            await self.close(code=1011)
            return
        self.endpoint = handshake.endpoint
        # An older socket of the same endpoint (half-open after sleep, say) must go.
        await self.channel_layer.group_send(self.group, {"type": "agent.replaced", "connection_id": self.connection_id})
        metrics.agent_connects.inc()
        await self.send_frame(
            p.Welcome(
                endpoint_id=str(self.endpoint.pk),
                mode=handshake.mode,
                heartbeat_interval=handshake.interval,
                server_time=time.time(),
                context_every=settings.CAISEY["CONTEXT_REFRESH_S"],
            )
        )
        await self.send_frame(p.Ack(ref=env.id))
        self.last_reports = hello.prompts
        self.reconciled_at = time.monotonic()
        for frame in handshake.frames:
            await self.send(text_data=frame)

    async def on_heartbeat(self, env: p.Envelope) -> None:
        # With the list-based layer, connections older than its group_expiry would silently stop
        # receiving (pub/sub subscriptions do not expire).
        expiry = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("group_expiry")
        if expiry and time.monotonic() - self.group_joined_at > expiry / 2:
            await self.join_group()
        beat: p.Heartbeat = env.body
        if beat.machine:  # now and then (Welcome.context_every): recorded before the ack, one write
            await batcher.submit(batcher.Unit.context(endpoint=self.endpoint, machine=beat.machine))
        await self.send_frame(p.Ack(ref=env.id))
        # Reconciling is a transaction: done when the runtime's list changed, and now and then as
        # a safety net, not on every beat of every active endpoint (a bulk run wakes thousands).
        changed = beat.prompts != self.last_reports
        due = time.monotonic() - self.reconciled_at > settings.CAISEY["PROMPT_RECONCILE_EVERY_S"]
        if changed or (due and (beat.prompts or beat.mode == AgentMode.ACTIVE)):
            self.last_reports = beat.prompts
            self.reconciled_at = time.monotonic()
            await self.reconcile_prompts(beat.prompts)

    async def reconcile_prompts(self, reports: list) -> None:
        try:
            await batcher.submit(batcher.Unit.prompts(endpoint=self.endpoint, reports=reports))
        except Exception:  # reconciliation retries at the next heartbeat; the socket must live on
            self.reconciled_at = 0.0
            log.exception("reconciling prompts of %s failed", self.endpoint.pk)

    async def on_domain_frame(self, env: p.Envelope) -> None:
        try:
            applied = await batcher.submit(batcher.Unit.frame(endpoint=self.endpoint, envelope=env))
        except services.UnsupportedMessage as exc:
            await self.reject("unsupported", str(exc), ref=env.id)
            return
        except Exception:
            log.exception("applying %s %s from %s failed", env.type, env.id, self.endpoint.pk)
            await self.reject("server_error", "the frame could not be applied; send it again later", ref=env.id)
            return
        await self.send_frame(p.Ack(ref=env.id, duplicate=not applied))

    # --- doorbells from the channel layer ------------------------------------------------

    async def agent_replaced(self, message) -> None:
        if self.endpoint is None:
            return  # a hello that was refused: this socket is closing anyway
        if message["connection_id"] != self.connection_id:
            await self.send_error("replaced", "a newer connection of this endpoint took over")
            await self.close(code=p.CLOSE_REPLACED)

    async def agent_revoked(self, message) -> None:
        if self.endpoint is None:
            return
        await self.send_error("revoked", "endpoint was revoked")
        await self.close(code=p.CLOSE_REVOKED)

    async def agent_doorbell(self, message) -> None:
        """Something for this agent waits in the database."""
        if self.endpoint is None:
            return  # rung while a refused hello was being processed
        await self.deliver()

    async def deliver(self) -> None:
        """What is due now (the hello sent everything waiting at once)."""
        try:
            frames = await batcher.submit(batcher.Unit.deliver(endpoint_id=self.endpoint.pk))
        except Exception:  # the rows stay queued: the next doorbell or the outbox sweep sends them
            log.exception("claiming the outbox of %s failed", self.endpoint.pk)
            return
        for frame in frames:
            await self.send(text_data=frame)

    # --- helpers ---------------------------------------------------------------------------

    async def join_group(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.group_joined_at = time.monotonic()

    async def send_frame(self, body, *, id: str | None = None) -> None:
        await self.send(text_data=p.encode(p.envelope(body, id=id)))

    async def send_error(self, code: str, detail: str, ref: str = "") -> None:
        await self.send_frame(p.Error(code=code, detail=detail[:500], ref=ref))

    async def reject(self, code: str, detail: str, ref: str = "") -> None:
        metrics.frames_rejected.labels(code).inc()
        await self.send_error(code, detail, ref=ref)
