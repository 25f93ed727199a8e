"""channels-redis under redis-py 8 kills consumers about every 9 s unless the layer's socket
timeout is lifted (channels_redis #422). Hold a real agent over the real Redis layer for well
over a minute, then prove the layer still reaches it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 75


@pytest.mark.parametrize("stack", [{"CAISEY_HEARTBEAT_LAZY_S": "5"}], indirect=True)
def test_agent_stays_connected_over_the_redis_layer_for_over_a_minute(stack):
    stack.seed()
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="longhaul").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    time.sleep(HOLD_SECONDS)
    log = agent.log_text()
    assert log.count("connected as") == 1, log
    assert "connection to" not in log and "reconnecting" not in log, log
    connections = stack.django(
        "from bridge.models import AgentConnection;"
        f"print(AgentConnection.all_tenants.filter(endpoint_id='{agent.endpoint_id}').count())"
    ).strip()
    assert connections.endswith("1")
    # The consumer's channel-layer receive loop is still alive: a group message reaches it.
    stack.django(
        "from caisey.actors import Party; from endpoints import services; from endpoints.models import Endpoint;"
        f"services.endpoint_revoke(actor=Party.OPERATOR, endpoint=Endpoint.all_tenants.get(pk='{agent.endpoint_id}'), reason='end of drill')"
    )
    assert agent.proc.wait(timeout=20) == 3
