"""The agent socket over the real ASGI stack and the real Redis channel layer."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from bridge import last_seen
from bridge.models import AgentConnection
from caisey.actors import Party
from caisey_agent import protocol as p
from endpoints import services
from endpoints.models import Endpoint
from endpoints.presence import presence_of
from tests import factories
from tests.bridge.agent_client import FakeAgent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def enrolled(db):
    t = factories.tenant()
    return factories.endpoint(factories.client_group(t))


def _endpoint(pk) -> Endpoint:
    return Endpoint.all_tenants.get(pk=pk)


async def test_hello_with_valid_credential_is_welcomed_and_recorded(enrolled):
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello(enrolled.endpoint.pk, enrolled.credential, machine={"hostname": "app01", "os": "Linux"})
    assert reply.type == "welcome"
    assert reply.body.endpoint_id == str(enrolled.endpoint.pk)
    assert reply.body.mode == "lazy"
    ack = await agent.recv()
    assert ack.type == "ack"
    ep = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert ep.hostname == "app01"
    assert ep.machine_context["os"] == "Linux"
    assert presence_of(ep) == "lazy"
    assert await database_sync_to_async(AgentConnection.all_tenants.filter(endpoint=ep).count)() == 1
    await agent.close()
    ep = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert presence_of(ep) == "offline"


async def test_forged_credential_is_refused_and_changes_nothing(enrolled):
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello(enrolled.endpoint.pk, "not-the-credential", machine={"hostname": "evil"})
    assert reply.type == "error" and reply.body.code == "unauthenticated"
    assert await agent.expect_close() == p.CLOSE_UNAUTHENTICATED
    ep = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert ep.hostname != "evil" and ep.last_seen_at is None


async def test_unknown_endpoint_id_is_refused(enrolled):
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello("00000000-0000-0000-0000-000000000000", enrolled.credential)
    assert reply.body.code == "unauthenticated"
    assert await agent.expect_close() == p.CLOSE_UNAUTHENTICATED


async def test_revoked_endpoint_is_refused_with_reason(enrolled):
    await database_sync_to_async(services.endpoint_revoke)(
        actor=Party.SYSTEM, endpoint=enrolled.endpoint, reason="laptop stolen"
    )
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    assert reply.body.code == "revoked"
    assert "laptop stolen" in reply.body.detail
    assert await agent.expect_close() == p.CLOSE_REVOKED


async def test_revoking_closes_a_live_connection(enrolled):
    agent = FakeAgent()
    await agent.connect()
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    await agent.recv()  # ack
    await database_sync_to_async(services.endpoint_revoke)(
        actor=Party.SYSTEM, endpoint=enrolled.endpoint, reason="offboarded"
    )
    err = await agent.recv()
    assert err.type == "error" and err.body.code == "revoked"
    assert await agent.expect_close() == p.CLOSE_REVOKED


@pytest.mark.parametrize(
    "frame,code",
    [
        ("{not json", "malformed"),
        (json.dumps({"type": "hello"}), "malformed"),
        (json.dumps({"type": "teleport", "id": "x1", "ts": 1.0, "body": {}}), "unknown_type"),
        (json.dumps({"type": "heartbeat", "id": "x2", "ts": 1.0, "body": {"interval": "soon"}}), "invalid_body"),
        (json.dumps({"type": "heartbeat", "id": "x3", "ts": 1.0, "body": {"interval": 5}}), "not_authenticated"),
        ("x" * (300 * 1024), "oversized"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_socket_survives(enrolled, frame, code):
    agent = FakeAgent()
    await agent.connect()
    await agent.send_raw(text=frame)
    reply = await agent.recv()
    assert reply.type == "error" and reply.body.code == code
    # The consumer is still alive and accepts a proper hello afterwards.
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    await agent.close()


async def test_bad_frames_after_auth_change_nothing(enrolled):
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()
    before = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    await agent.send_raw(text='{"type": "action.result", "id": "r1", "ts": 1, "body": {"action_id": 5}}')
    assert (await agent.recv()).body.code == "invalid_body"
    await agent.send_raw(data=b"\x00\x01binary")
    assert (await agent.recv()).body.code == "malformed"
    after = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert after.machine_context == before.machine_context and after.status == before.status
    await agent.close()


async def test_heartbeats_are_acked_and_coalesced_into_last_seen(enrolled):
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()
    first = (await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)).last_seen_at
    for _ in range(5):
        hb_id = await agent.send(p.Heartbeat(interval=60))
        ack = await agent.recv()
        assert ack.type == "ack" and ack.body.ref == hb_id
    await last_seen.buffer.flush()
    later = (await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)).last_seen_at
    assert later > first
    await agent.close()


async def test_newer_connection_replaces_older_one(enrolled):
    old, new = FakeAgent(), FakeAgent()
    await old.connect()
    await old.hello(enrolled.endpoint.pk, enrolled.credential)
    await old.recv()
    await new.connect()
    assert (await new.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    err = await old.recv()
    assert err.body.code == "replaced"
    assert await old.expect_close() == p.CLOSE_REPLACED
    # The old socket's disconnect must not mark the endpoint offline: the new one is current.
    ep = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert presence_of(ep) == "lazy"
    await new.close()


async def test_active_heartbeats_reconcile_prompts_only_when_the_list_changes(enrolled, monkeypatch):
    from bridge import services as bridge_services

    calls = []
    original = bridge_services.agent_prompts_report

    def counting(*, endpoint, reports):
        calls.append(len(reports))
        return original(endpoint=endpoint, reports=reports)

    monkeypatch.setattr(bridge_services, "agent_prompts_report", counting)
    agent = FakeAgent()
    await agent.connect()
    await agent.hello(enrolled.endpoint.pk, enrolled.credential)
    await agent.recv()
    assert calls == [0]  # the hello reconciles once
    for _ in range(5):  # an active endpoint with no prompts, beating every 10 s
        await agent.send(p.Heartbeat(interval=10, mode="active"))
        await agent.recv()
    assert calls == [0]
    held = [p.PromptReport(prompt_id="4b0c7c8e-0000-4000-8000-000000000001", state="delivered")]
    for _ in range(3):
        await agent.send(p.Heartbeat(interval=10, mode="active", prompts=held))
        await agent.recv()
    assert calls == [0, 1]  # the list changed once
    await agent.close()


async def test_a_refused_hello_leaves_no_group_membership_behind(enrolled):
    """The socket joins the endpoint's group before the handshake; a forged hello must not
    stay in it (a revoke or a replacement would otherwise reach the wrong socket)."""
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello(enrolled.endpoint.pk, "forged")
    assert reply.body.code == "unauthenticated"
    assert await agent.expect_close() == p.CLOSE_UNAUTHENTICATED
    real = FakeAgent()
    await real.connect()
    assert (await real.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    assert (await real.recv()).type == "ack"
    await real.close()


async def test_re_enrolling_the_machine_closes_the_old_identitys_socket(enrolled):
    """Was: the socket of the replaced identity stayed connected (and would have received commands)."""
    agent = FakeAgent()
    await agent.connect()
    assert (await agent.hello(enrolled.endpoint.pk, enrolled.credential)).type == "welcome"
    assert (await agent.recv()).type == "ack"

    def re_enroll():
        _, secret = factories.token(enrolled.endpoint.client_group)
        return services.endpoint_enroll(
            token_secret=secret, machine_id=enrolled.endpoint.machine_id, hostname="reinstalled", replace=True
        )

    assert (await database_sync_to_async(re_enroll)()).replaced is True
    error = await agent.recv(timeout=10)
    assert error.type == "error" and error.body.code == "replaced"
    assert await agent.expect_close(timeout=10) == p.CLOSE_REPLACED


async def test_a_heartbeat_that_carries_the_machine_context_keeps_it_as_the_last_known_state(enrolled, settings):
    settings.CAISEY = {**settings.CAISEY, "CONTEXT_REFRESH_S": 42.0}
    agent = FakeAgent()
    await agent.connect()
    reply = await agent.hello(enrolled.endpoint.pk, enrolled.credential, machine={"hostname": "app01", "users": []})
    assert reply.body.context_every == 42.0  # the agent is told how often to send it again
    await agent.recv()
    at_connect = (await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)).context_updated_at
    await agent.send(p.Heartbeat(interval=60))  # most beats carry none: nothing is written
    await agent.recv()
    assert (await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)).context_updated_at == at_connect
    await agent.send(p.Heartbeat(interval=60, machine={"hostname": "app01", "users": ["alice"]}))
    await agent.recv()
    ep = await database_sync_to_async(_endpoint)(enrolled.endpoint.pk)
    assert ep.machine_context["users"] == ["alice"] and ep.context_updated_at > at_connect
    await agent.close()
