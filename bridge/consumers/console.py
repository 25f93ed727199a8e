"""Console pages' socket: live doorbells for the signed-in technician's tenant only."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from bridge.groups import console_endpoint_group, console_tenant_group
from caisey import tenancy
from endpoints.models import Endpoint
from endpoints.selectors import membership_for_user

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _membership(user):
    return membership_for_user(user=user)


@database_sync_to_async
def _endpoint_in_tenant(tenant_id, endpoint_id) -> bool:
    with tenancy.bind(tenant_id):
        try:
            return Endpoint.objects.filter(pk=endpoint_id).exists()
        except (ValueError, Exception):  # a malformed id is simply not found
            return False


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        membership = await _membership(user)
        if membership is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.tenant_id = membership.tenant_id
        self.groups_joined = [console_tenant_group(self.tenant_id)]
        await self.channel_layer.group_add(self.groups_joined[0], self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or content.get("subscribe") != "endpoint":
            await self.send_json({"error": "unknown_request", "detail": "send {'subscribe': 'endpoint', 'id': ...}"})
            return
        endpoint_id = str(content.get("id", ""))
        if not await _endpoint_in_tenant(self.tenant_id, endpoint_id):
            await self.send_json({"error": "not_found", "detail": "no such endpoint"})
            return
        group = console_endpoint_group(endpoint_id)
        self.groups_joined.append(group)
        await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"subscribed": "endpoint", "id": endpoint_id})

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None

    async def console_event(self, message) -> None:
        await self.send_json({"event": message["event"], "payload": message["payload"]})
