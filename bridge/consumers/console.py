"""Console pages' socket: live doorbells for the signed-in technician's tenant only."""

from __future__ import annotations

import asyncio
import re

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from bridge import notify
from bridge.groups import console_tenant_group, console_topic_group, console_user_group
from bridge.registry import console_topic, topic_check
from caisey import tenancy
from endpoints.access import membership_resolve, second_factor_missing
from endpoints.identity import session_still_good
from endpoints.models import Endpoint

OBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _tenant_of(user, session=None):
    """The user's tenant through the one resolution (endpoints.access). A superuser without a
    membership gets no socket: console pages are for a tenant's members only; nor does a member
    who has yet to enrol the second factor their tenant requires (endpoints.identity)."""
    access = membership_resolve(user=user)
    if access is None or second_factor_missing(user=user, membership=access.membership, session=session):
        return None
    return access.tenant_id


_session_still_good = database_sync_to_async(session_still_good)


@console_topic("endpoint")
def endpoint_in_tenant(tenant_id, endpoint_id: str) -> bool:
    return Endpoint.objects.filter(pk=endpoint_id).exists()


@database_sync_to_async
def _may_subscribe(tenant_id, topic: str, object_id: str) -> bool:
    check = topic_check(topic)
    if check is None:
        return False
    with tenancy.bind(tenant_id):
        try:
            return check(tenant_id, object_id)
        except (ValueError, ValidationError):  # a malformed id is simply not found
            return False


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        tenant_id = await _tenant_of(user, self.scope.get("session"))
        if tenant_id is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.tenant_id = tenant_id
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.user_id = user.pk
        # The tenant's doorbells, and the person's own: a logout, deactivation or password change
        # rings it and the socket re-checks its session (console_recheck).
        self.groups_joined = [console_tenant_group(self.tenant_id), console_user_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        notify.attach_to_running_loop()
        await self.accept()
        # Idle timeout and lifetime pass without a doorbell: look now and then too.
        self.recheck_task = asyncio.get_running_loop().create_task(self._recheck_periodically())

    async def disconnect(self, code) -> None:
        task = getattr(self, "recheck_task", None)
        if task is not None:
            task.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(settings.CAISEY["CONSOLE_RECHECK_S"])
            if await self._close_unless_signed_in():
                return

    async def _close_unless_signed_in(self) -> bool:
        if await _session_still_good(session_key=self.session_key, user_id=self.user_id):
            return False
        await self.close(code=CLOSE_UNAUTHENTICATED)
        return True

    async def console_recheck(self, message) -> None:
        await self._close_unless_signed_in()

    async def receive_json(self, content, **kwargs) -> None:
        topic = content.get("subscribe") if isinstance(content, dict) else None
        if not isinstance(topic, str) or topic_check(topic) is None:
            await self.send_json(
                {"error": "unknown_request", "detail": "send {'subscribe': <endpoint|session|...>, 'id': ...}"}
            )
            return
        object_id = str(content.get("id", ""))[:64]
        # Ids are UUIDs or numbers. Other spellings a lookup may still accept ("urn:uuid:...",
        # "{...}") would make an invalid channel-layer group name and kill the socket.
        if not OBJECT_ID.fullmatch(object_id) or not await _may_subscribe(self.tenant_id, topic, object_id):
            await self.send_json({"error": "not_found", "detail": f"no such {topic}"})
            return
        group = console_topic_group(topic, object_id)
        self.groups_joined.append(group)
        await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"subscribed": topic, "id": object_id})

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if not text_data:  # binary or empty frames: the JSON consumer would raise and drop the socket
            await self.send_json({"error": "unknown_request", "detail": "send JSON text frames"})
            return
        await super().receive(text_data=text_data, **kwargs)

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None

    async def console_event(self, message) -> None:
        await self.send_json({"event": message["event"], "payload": message["payload"]})
