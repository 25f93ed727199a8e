"""Presence at session open, live over the console socket (issue 15 item 2): the real ASGI app,
the real Redis channel layer, an agent speaking the protocol on its socket.

The last-seen flush is held off for the test (``LAST_SEEN_FLUSH_S``): the window in which the
user saw "offline" is the one between the agent's answer and that flush, made as long as the test.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from caisey_agent import protocol as p
from endpoints.models import Endpoint, Role
from sessions_app.services import sessions
from tests import factories
from tests.bridge.test_console_consumer import ConsoleSocket, connect_agent, session_id_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def world(transactional_db, settings):
    settings.CAISEY = {
        **settings.CAISEY,
        "HEARTBEAT_ACTIVE_S": 10.0,
        "HEARTBEAT_LAZY_S": 60.0,
        "LAST_SEEN_FLUSH_S": 3600.0,
    }
    tenant = factories.tenant()
    membership = factories.member(tenant, role=Role.TECHNICIAN)
    return {
        "enrolled": factories.endpoint(factories.client_group(tenant), hostname="vm"),
        "tech": membership.user,
        "console": session_id_for(membership.user),
    }


@database_sync_to_async
def last_beat_ago(endpoint_id, seconds: float) -> None:
    Endpoint.all_tenants.filter(pk=endpoint_id).update(last_seen_at=timezone.now() - timedelta(seconds=seconds))


@database_sync_to_async
def open_session(user, endpoint_id):
    return sessions.session_open(actor=user, endpoint=Endpoint.all_tenants.get(pk=endpoint_id), reason="slow disk")


async def test_a_lazy_agent_last_seen_45_s_ago_is_shown_waking_then_active_never_offline(world):
    endpoint_id = world["enrolled"].endpoint.pk
    console = await ConsoleSocket(world["console"]).open()
    agent = await connect_agent(world["enrolled"])
    assert (await console.next_event("endpoint.presence"))["state"] == "lazy"
    await last_beat_ago(endpoint_id, 45)

    session = await open_session(world["tech"], endpoint_id)
    assert session.opened_offline is False
    assert (await console.next_event("endpoint.presence"))["state"] == "waking"

    mode_set = await agent.recv()
    assert mode_set.type == "mode.set" and mode_set.body.mode == "active"
    await agent.send(p.Ack(ref=mode_set.id))
    await agent.send(p.Heartbeat(interval=10.0, mode="active"))  # the runner beats at once
    assert (await console.next_event("endpoint.presence"))["state"] == "active"
    assert await console.silent_for(0.5)  # and nothing after says otherwise
    await agent.close()
    await console.close()
