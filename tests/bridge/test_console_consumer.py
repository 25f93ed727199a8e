"""The console pages' socket (/ws/console/) over the real ASGI app and the real Redis layer."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from caisey.asgi import application
from endpoints.models import Role
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
ORIGIN = b"http://testserver"  # "testserver" is in ALLOWED_HOSTS


# --- a console page, as a browser opens the socket (also used by tests/test_tenant_isolation.py) ---


def session_id_for(user) -> str:
    """Sign ``user`` in and return the session id. Synchronous: call it from a fixture."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class ConsoleSocket:
    def __init__(self, session_id: str | None = None, *, origin: bytes | None = ORIGIN, path: str = "/ws/console/"):
        headers = []
        if session_id is not None:
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_id}".encode()))
        if origin is not None:
            headers.append((b"origin", origin))
        self.comm = WebsocketCommunicator(application, path, headers=headers)

    async def connect(self) -> tuple[bool, int | None]:
        connected, code = await self.comm.connect(timeout=5)
        if not connected:
            # A refused consumer still waits on the channel layer until told the client left;
            # left running, it would outlive this test's event loop.
            await self.comm.disconnect()
        return connected, code

    async def open(self) -> ConsoleSocket:
        connected, code = await self.connect()
        assert connected, f"console socket refused with close code {code}"
        return self

    async def send(self, message) -> None:
        await self.comm.send_to(text_data=message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 3) -> dict:
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def subscribe_to(self, topic: str, object_id) -> dict:
        await self.send({"subscribe": topic, "id": str(object_id)})
        return await self.recv()

    async def subscribe(self, endpoint_id) -> dict:
        return await self.subscribe_to("endpoint", endpoint_id)

    async def next_event(self, event: str, *, timeout: float = 5) -> dict:
        async def find() -> dict:
            while True:
                message = await self.recv(timeout=timeout)
                if message.get("event") == event:
                    return message["payload"]

        return await asyncio.wait_for(find(), timeout)

    async def silent_for(self, seconds: float = 0.5) -> bool:
        return await self.comm.receive_nothing(timeout=seconds)

    async def close(self) -> None:
        await self.comm.disconnect()


async def connect_agent(enrolled: factories.EnrolledEndpoint) -> FakeAgent:
    agent = FakeAgent()
    await agent.connect()
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    assert (await agent.recv()).type == "ack"
    return agent


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def world(transactional_db):
    a, b = factories.tenant("Acme MSP"), factories.tenant("Rival MSP")
    return {
        "a": a,
        "b": b,
        "a_endpoint": factories.endpoint(factories.client_group(a), hostname="acme-pc01"),
        "b_endpoint": factories.endpoint(factories.client_group(b), hostname="rival-pc01"),
        "a_session": session_id_for(factories.member(a, role=Role.TECHNICIAN).user),
        "b_session": session_id_for(factories.member(b, role=Role.VIEWER).user),
    }


# --- who may open the socket ------------------------------------------------------------------


async def test_no_session_is_refused_as_unauthenticated(world):
    connected, code = await ConsoleSocket(None).connect()
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)


async def test_unknown_session_id_is_refused_as_unauthenticated(world):
    connected, code = await ConsoleSocket("not-a-session-id").connect()
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)


@pytest.fixture
def drifter_session(transactional_db):
    user = get_user_model().objects.create_user(username="drifter", password=factories.PASSWORD)
    return session_id_for(user)


async def test_a_user_with_no_membership_is_refused(world, drifter_session):
    connected, code = await ConsoleSocket(drifter_session).connect()
    assert (connected, code) == (False, CLOSE_FORBIDDEN)


@pytest.mark.parametrize("origin", [b"https://evil.example", b"http://testserver.evil.example", b"null", None])
async def test_a_foreign_or_missing_origin_is_refused_even_with_a_valid_session(world, origin):
    connected, _ = await ConsoleSocket(world["a_session"], origin=origin).connect()
    assert connected is False


async def test_a_member_with_an_allowed_origin_is_accepted(world):
    console = await ConsoleSocket(world["a_session"]).open()
    assert await console.silent_for(0.2)  # nothing is pushed unprompted
    await console.close()


# --- presence events ------------------------------------------------------------------------------


async def test_member_receives_presence_of_own_tenants_agents(world):
    console = await ConsoleSocket(world["a_session"]).open()
    enrolled = world["a_endpoint"]

    agent = await connect_agent(enrolled)
    online = await console.next_event("endpoint.presence")
    assert online["id"] == str(enrolled.endpoint.pk)
    assert online["hostname"] == "acme-pc01"
    assert online["presence"] == "lazy" and online["last_seen"]

    await agent.close()
    offline = await console.next_event("endpoint.presence")
    assert offline["id"] == str(enrolled.endpoint.pk)
    assert offline["presence"] == "offline"
    await console.close()


async def test_member_does_not_receive_another_tenants_events(world):
    console_a = await ConsoleSocket(world["a_session"]).open()
    console_b = await ConsoleSocket(world["b_session"]).open()

    agent_b = await connect_agent(world["b_endpoint"])
    event = await console_b.next_event("endpoint.presence")  # the event was sent: B sees it ...
    assert event["hostname"] == "rival-pc01"
    assert await console_a.silent_for(0.5)  # ... and A does not
    await agent_b.close()
    assert (await console_b.next_event("endpoint.presence"))["presence"] == "offline"
    assert await console_a.silent_for(0.3)

    await console_a.close()
    await console_b.close()


# --- subscriptions ------------------------------------------------------------------------------


async def test_subscribe_to_own_endpoint(world):
    console = await ConsoleSocket(world["a_session"]).open()
    endpoint_id = str(world["a_endpoint"].endpoint.pk)
    assert await console.subscribe(endpoint_id) == {"subscribed": "endpoint", "id": endpoint_id}
    await console.close()


@pytest.mark.parametrize("bad_id", ["b_endpoint", "00000000-0000-0000-0000-000000000000", "not-a-uuid", "", "1 OR 1=1"])
async def test_subscribe_to_another_tenants_or_unknown_endpoint_is_not_found(world, bad_id):
    endpoint_id = str(world["b_endpoint"].endpoint.pk) if bad_id == "b_endpoint" else bad_id
    console = await ConsoleSocket(world["a_session"]).open()
    reply = await console.subscribe(endpoint_id)
    assert reply["error"] == "not_found"
    assert "rival" not in json.dumps(reply)

    # And the refused subscription did not join anything: B's agent connecting is not seen.
    agent_b = await connect_agent(world["b_endpoint"])
    assert await console.silent_for(0.5)
    await agent_b.close()
    await console.close()


@pytest.mark.parametrize("spelling", ["urn:uuid:{}", "{{{}}}", "{}\n"])
async def test_odd_spellings_of_an_own_endpoint_id_do_not_kill_the_socket(world, spelling):
    endpoint_id = str(world["a_endpoint"].endpoint.pk)
    console = await ConsoleSocket(world["a_session"]).open()
    reply = await console.subscribe(spelling.format(endpoint_id))
    assert reply.get("error") == "not_found" or reply.get("subscribed") == "endpoint"
    assert (await console.subscribe(endpoint_id)) == {"subscribed": "endpoint", "id": endpoint_id}
    await console.close()


# --- malformed messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame", ["{not json", "[1, 2, 3]", '"subscribe"', "null", '{"subscribe": "tenant", "id": "x"}', '{"hello": 1}']
)
async def test_malformed_or_unknown_messages_get_an_error_and_the_socket_survives(world, frame):
    console = await ConsoleSocket(world["a_session"]).open()
    await console.send(frame)
    reply = await console.recv()
    assert reply["error"] == "unknown_request"
    # Still alive: a proper subscription works, and live events still arrive.
    endpoint_id = str(world["a_endpoint"].endpoint.pk)
    assert (await console.subscribe(endpoint_id))["subscribed"] == "endpoint"
    agent = await connect_agent(world["a_endpoint"])
    assert (await console.next_event("endpoint.presence"))["id"] == endpoint_id
    await agent.close()
    await console.close()


async def test_binary_frames_get_an_error_and_the_socket_survives(world):
    console = await ConsoleSocket(world["a_session"]).open()
    await console.comm.send_to(bytes_data=b"\x00\xffbinary")
    reply = await console.recv()
    assert "error" in reply
    assert (await console.subscribe(world["a_endpoint"].endpoint.pk))["subscribed"] == "endpoint"
    await console.close()
