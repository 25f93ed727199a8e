"""The agent's socket: handshake, heartbeats, and routing agent frames to their handlers.

Thin by design: parse, authenticate, call a service, acknowledge. Every frame
that cannot be accepted gets an error frame and a counter, never a crash and
never a state change.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from bridge import last_seen, metrics, outbox, services
from bridge.groups import agent_group
from caisey import ratelimit
from caisey_agent import protocol as p
from endpoints.services import AgentAuthError

log = logging.getLogger(__name__)

AUTH_CLOSE_CODES = {"unauthenticated": p.CLOSE_UNAUTHENTICATED, "revoked": p.CLOSE_REVOKED}


class AgentConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.endpoint = None
        self.connection_id = uuid.uuid4().hex
        client = self.scope.get("client") or ("unknown", 0)
        self.remote_ip = str(client[0])
        self.group = None
        self.group_joined_at = 0.0
        await self.accept()
        self.hello_deadline = asyncio.get_running_loop().create_task(self._close_without_hello())

    async def _close_without_hello(self) -> None:
        await asyncio.sleep(settings.CAISEY["HELLO_TIMEOUT"])
        if self.endpoint is None:
            await self.send_error("hello_timeout", "no hello received in time")
            await self.close(code=p.CLOSE_HELLO_TIMEOUT)

    async def disconnect(self, code) -> None:
        self.hello_deadline.cancel()
        if self.endpoint is None:
            return
        last_seen.buffer.forget(self.endpoint.pk)
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await database_sync_to_async(services.agent_disconnected)(
            endpoint_id=self.endpoint.pk, connection_id=self.connection_id, close_code=code
        )

    # --- frames from the agent ------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
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
        if env.type == p.Hello.TYPE:
            await self.reject("already_authenticated", "hello was already received", ref=env.id)
        elif env.type == p.Heartbeat.TYPE:
            await self.on_heartbeat(env)
        elif env.type == p.Ack.TYPE:
            await database_sync_to_async(outbox.outbox_ack)(endpoint_id=self.endpoint.pk, message_id=env.body.ref)
        else:
            await self.on_domain_frame(env)

    async def on_hello(self, env: p.Envelope) -> None:
        hello: p.Hello = env.body
        fail_limit, window = settings.CAISEY["RATE_AUTH_FAILURES_PER_IP"]
        try:
            handshake = await database_sync_to_async(services.agent_hello)(
                hello=hello, connection_id=self.connection_id, remote_ip=self.remote_ip
            )
        except AgentAuthError as exc:
            metrics.auth_failures.labels(exc.code).inc()
            allowed = await ratelimit.ahit("agent-auth-fail", self.remote_ip, limit=fail_limit, window=window)
            code = AUTH_CLOSE_CODES[exc.code] if allowed else p.CLOSE_RATE_LIMITED
            await self.send_error(exc.code if allowed else "rate_limited", exc.message, ref=env.id)
            await self.close(code=code)
            return
        limit, window = settings.CAISEY["RATE_CONNECTS_PER_ENDPOINT"]
        if not await ratelimit.ahit("agent-connect", str(handshake.endpoint.pk), limit=limit, window=window):
            await database_sync_to_async(services.agent_disconnected)(
                endpoint_id=handshake.endpoint.pk, connection_id=self.connection_id, close_code=p.CLOSE_RATE_LIMITED
            )
            await self.send_error("rate_limited", "too many connects for this endpoint; back off", ref=env.id)
            await self.close(code=p.CLOSE_RATE_LIMITED)
            return
        self.hello_deadline.cancel()
        self.endpoint = handshake.endpoint
        self.group = agent_group(self.endpoint.pk)
        await self.join_group()
        # An older socket of the same endpoint (half-open after sleep, say) must go.
        await self.channel_layer.group_send(
            self.group, {"type": "agent.replaced", "connection_id": self.connection_id}
        )
        metrics.agent_connects.inc()
        await self.send_frame(
            p.Welcome(
                endpoint_id=str(self.endpoint.pk),
                mode=handshake.mode,
                heartbeat_interval=handshake.interval,
                server_time=time.time(),
            )
        )
        await self.send_frame(p.Ack(ref=env.id))
        await self.reconcile_prompts(hello.prompts)
        # Everything waiting for this agent goes now, oldest first, not at the next sweep.
        await self.deliver(due_only=False)

    async def on_heartbeat(self, env: p.Envelope) -> None:
        last_seen.buffer.touch(self.endpoint.pk)
        # Connections older than the layer's group_expiry would silently stop receiving.
        if time.monotonic() - self.group_joined_at > settings.CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] / 2:
            await self.join_group()
        await self.send_frame(p.Ack(ref=env.id))
        beat: p.Heartbeat = env.body
        # A lazy endpoint has no session and so no prompts: its empty reports cost nothing.
        if beat.prompts or beat.mode == "active":
            await self.reconcile_prompts(beat.prompts)

    async def reconcile_prompts(self, reports: list) -> None:
        try:
            await database_sync_to_async(services.agent_prompts_report)(endpoint=self.endpoint, reports=reports)
        except Exception:  # reconciliation retries at the next heartbeat; the socket must live on
            log.exception("reconciling prompts of %s failed", self.endpoint.pk)

    async def on_domain_frame(self, env: p.Envelope) -> None:
        try:
            applied = await database_sync_to_async(services.agent_frame_apply)(endpoint=self.endpoint, envelope=env)
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
        if message["connection_id"] != self.connection_id:
            await self.send_error("replaced", "a newer connection of this endpoint took over")
            await self.close(code=p.CLOSE_REPLACED)

    async def agent_revoked(self, message) -> None:
        await self.send_error("revoked", "endpoint was revoked")
        await self.close(code=p.CLOSE_REVOKED)

    async def agent_doorbell(self, message) -> None:
        """Something for this agent waits in the database."""
        await self.deliver(due_only=True)

    async def deliver(self, *, due_only: bool) -> None:
        frames = await database_sync_to_async(outbox.outbox_claim)(endpoint_id=self.endpoint.pk, due_only=due_only)
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
