"""Connectivity told honestly and live (issue 10, item 1).

Degraded measures the path as it is now: messages that waited while the endpoint was away and
are delivered after it returns are not delivery latency, and a queue built up during an outage
is not a lag on the new connection. Every change of connectivity (degraded and back, waking,
offline) reaches console pages as an ``endpoint.presence`` event with one payload shape, and no
later announcement overwrites a degraded the sweep found.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from bridge import health, notify, outbox, presence_sweep
from bridge.models import OutboxMessage, OutboxStatus
from bridge.services import agent_ack_receive, agent_connection_record, endpoint_set_mode
from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import AgentMode, Endpoint
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def endpoint(db):
    return factories.endpoint(factories.client_group(factories.tenant())).endpoint


@pytest.fixture
def announced(monkeypatch):
    """The ``endpoint.presence`` payloads announced to console pages, in order."""
    payloads: list[dict] = []
    original = notify.console_event

    def capture(**kwargs):
        if kwargs["event"] == "endpoint.presence":
            payloads.append(kwargs["payload"])
        return original(**kwargs)

    monkeypatch.setattr(notify, "console_event", capture)
    return payloads


def fresh(endpoint) -> Endpoint:
    return Endpoint.all_tenants.get(pk=endpoint.pk)


def connect(endpoint, *, ago: timedelta = timedelta(0), interval: float = 10.0) -> None:
    """A live connection opened ``ago``, beating now, as the bridge records a hello."""
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(mode="active" if interval == 10.0 else "lazy")
    hello = p.Hello(endpoint_id=str(endpoint.pk), credential="", agent_version="1.0")
    with tenancy.bind(endpoint.tenant_id):
        agent_connection_record(
            endpoint=fresh(endpoint), hello=hello, connection_id=uuid.uuid4().hex, remote_ip="10.0.0.9"
        )
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(connected_at=timezone.now() - ago, last_seen_at=timezone.now())


def queue(endpoint, n: int, *, created_ago: timedelta) -> list[OutboxMessage]:
    """``n`` messages queued ``created_ago`` (while the endpoint was away, in the outage tests)."""
    rows = []
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():
        for _ in range(n):
            rows.append(outbox.outbox_enqueue(endpoint=fresh(endpoint), body=p.ActionCancel(action_id="x")))
    OutboxMessage.all_tenants.filter(pk__in=[r.pk for r in rows]).update(created_at=timezone.now() - created_ago)
    return rows


def offline_for_a_while(endpoint, *, minutes: int) -> None:
    """The agent was killed ``minutes`` ago: the outbox sweep counted attempts while it was away."""
    gone = timezone.now() - timedelta(minutes=minutes)
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=gone, disconnected_at=gone)
    outbox.outbox_sweep()


def deliver_all(endpoint) -> None:
    """The returning agent's hello claims everything waiting; the agent acknowledges each at once."""
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    for message_id in OutboxMessage.all_tenants.filter(endpoint=endpoint, status=OutboxStatus.QUEUED).values_list(
        "pk", flat=True
    ):
        assert outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message_id) is not None


def figures(endpoint) -> health.EndpointHealth:
    with tenancy.bind(endpoint.tenant_id):
        return health.health_for([endpoint.pk])[endpoint.pk]


# --- the degraded computation, with an outage in the history ---------------------------------


def test_messages_that_waited_through_an_outage_are_not_delivery_latency(endpoint):
    connect(endpoint, ago=timedelta(minutes=20))
    offline_for_a_while(endpoint, minutes=8)
    queue(endpoint, 5, created_ago=timedelta(minutes=7))  # technicians queued work while it was away
    connect(endpoint)  # it returns
    deliver_all(endpoint)

    h = figures(endpoint)
    assert h.delivered_1h == 5 and h.queue_depth == 0
    # Measured from the send on the new connection to the ack: milliseconds, not the 7 minutes waited.
    assert h.recent_p95_ms is not None and h.recent_p95_ms < 5_000, h.recent_p95_ms
    assert not h.degraded, h.degraded_reasons
    with tenancy.bind(endpoint.tenant_id):
        assert health.connectivity(fresh(endpoint), h).value == "active"  # as it was before the outage


def test_a_queue_built_up_during_an_outage_is_not_lag_on_the_new_connection(endpoint):
    offline_for_a_while(endpoint, minutes=8)
    queue(endpoint, 3, created_ago=timedelta(minutes=7))
    connect(endpoint, ago=timedelta(seconds=2))  # back two seconds ago; its hello's claim is in flight
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)

    h = figures(endpoint)
    assert h.queue_depth == 3  # what is waiting is still counted ...
    assert h.oldest_unacked_s is not None and h.oldest_unacked_s < 30  # ... as waiting since it returned
    assert not h.degraded, h.degraded_reasons


def test_a_path_that_lags_now_is_still_degraded(endpoint):
    """The fix measures the path; it does not hide a slow one."""
    connect(endpoint, ago=timedelta(minutes=5))
    (slow,) = queue(endpoint, 1, created_ago=timedelta(seconds=9))
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    OutboxMessage.all_tenants.filter(pk=slow.pk).update(last_attempt_at=timezone.now() - timedelta(seconds=8))
    outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=slow.pk)  # acknowledged 8 s after it was sent
    (stuck,) = queue(endpoint, 1, created_ago=timedelta(minutes=2))  # sent on this connection, never acked

    h = figures(endpoint)
    assert h.recent_p95_ms is not None and h.recent_p95_ms > 5_000
    assert any(r.startswith("delivery latency p95") for r in h.degraded_reasons), h.degraded_reasons
    assert any(r.startswith("oldest unacknowledged message waiting") for r in h.degraded_reasons)


# --- the queue column: what waits, not history --------------------------------------------------


def test_queue_column_counts_what_waits_not_messages_that_failed_long_ago(client, endpoint):
    (old,) = queue(endpoint, 1, created_ago=timedelta(days=2))
    OutboxMessage.all_tenants.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=1))
    outbox.outbox_sweep()  # it expired: failed_to_deliver, for good
    assert OutboxMessage.all_tenants.get(pk=old.pk).status == OutboxStatus.FAILED_TO_DELIVER
    queue(endpoint, 2, created_ago=timedelta(minutes=1))  # and two wait now

    client.force_login(factories.member(endpoint.tenant).user)
    html = client.get("/").content.decode()
    row = html[html.index(f'<tr data-endpoint="{endpoint.pk}">') :]
    row = row[: row.index("</tr>")]
    cells = [c.split(">", 1)[1].strip() for c in row.split("<td")[1:]]
    assert cells[4].startswith("2"), cells[4]  # the queue column: the two that wait
    assert "failed" not in row
    h = figures(endpoint)
    assert h.failed_to_deliver == 1 and h.failed_1h == 0  # history is kept, as history


# --- live: every change announced, with its reason, and never overwritten ---------------------------


def test_degraded_and_its_recovery_are_announced_live_with_the_reason(endpoint, announced):
    connect(endpoint, ago=timedelta(minutes=5))
    queue(endpoint, 1, created_ago=timedelta(minutes=2))  # sent on this connection, not acknowledged
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    announced.clear()

    assert presence_sweep.run() == 1
    (payload,) = announced
    assert payload["presence"] == "degraded" and payload["state"] == "degraded"
    assert payload["reason"].startswith("oldest unacknowledged message waiting")
    assert payload["since"] and payload["id"] == str(endpoint.pk)
    assert presence_sweep.run() == 0  # the same judgement is not announced again

    # A later announcement (a technician's action wakes it) keeps what the sweep found.
    endpoint_set_mode(endpoint=fresh(endpoint), mode=AgentMode.ACTIVE, reason="action queued")
    assert announced[-1]["presence"] == "degraded"

    deliver_all(endpoint)  # the agent catches up
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(heartbeat_interval=10.0)
    announced.clear()
    assert presence_sweep.run() == 1
    assert [a["presence"] for a in announced] == ["active"]
    assert announced[0]["reason"] == "connected, heartbeat every 10 s"


def test_waking_is_announced_until_the_agent_applies_the_cadence(endpoint, announced):
    connect(endpoint, interval=60.0)  # lazy
    announced.clear()
    endpoint_set_mode(endpoint=fresh(endpoint), mode=AgentMode.ACTIVE, reason="session opened")
    assert announced[-1]["presence"] == "waking"
    assert fresh(endpoint).presence_announced == "waking"
    mode_set = OutboxMessage.all_tenants.get(endpoint=endpoint, kind="mode.set", status=OutboxStatus.QUEUED)
    outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=mode_set.pk)  # the agent beats every 10 s now
    assert announced[-1]["presence"] == "active"
    assert fresh(endpoint).presence_announced == "active"


def test_heartbeats_that_stop_are_announced_offline_with_the_time_last_seen(endpoint, announced):
    connect(endpoint)
    last = timezone.now() - timedelta(minutes=3)
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=last)  # frozen: no clean disconnect
    announced.clear()
    assert presence_sweep.run() == 1
    (payload,) = announced
    assert payload["presence"] == "offline"
    assert payload["reason"] == "heartbeats stopped without a disconnect"
    assert payload["since"] == last.isoformat()
    assert payload["since_text"] == f"{timezone.localtime(last):%H:%M:%S}"  # as the pages render it


def test_a_frozen_agent_that_resumes_on_its_socket_is_announced_back(endpoint, announced):
    """SIGSTOP, then SIGCONT before the server closed the socket: heartbeats resume with no connect."""
    connect(endpoint)
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now() - timedelta(minutes=1))
    assert presence_sweep.run() == 1 and announced[-1]["presence"] == "offline"
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now())  # it beats again
    assert presence_sweep.run() == 1
    assert announced[-1]["presence"] == "active" and fresh(endpoint).presence_announced == "active"
    assert presence_sweep.run() == 0


def test_a_slow_acknowledgement_is_judged_and_announced_degraded_when_it_arrives(endpoint, announced):
    connect(endpoint, ago=timedelta(minutes=5))
    (slow,) = queue(endpoint, 1, created_ago=timedelta(seconds=9))
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    OutboxMessage.all_tenants.filter(pk=slow.pk).update(last_attempt_at=timezone.now() - timedelta(seconds=8))
    announced.clear()
    agent_ack_receive(endpoint_id=endpoint.pk, message_id=slow.pk)  # as the agent socket applies an ack
    assert [a["presence"] for a in announced] == ["degraded"]
    assert announced[0]["reason"].startswith("delivery latency p95")
    (fast,) = queue(endpoint, 1, created_ago=timedelta(0))
    outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    agent_ack_receive(endpoint_id=endpoint.pk, message_id=fast.pk)
    assert len(announced) == 1  # a fast one is not judged on its own: nothing more to say


def test_one_connect_too_many_is_announced_degraded_at_the_connect(endpoint, announced, settings):
    settings.CAISEY = {**settings.CAISEY, "DEGRADED_RECONNECTS": 2}
    connect(endpoint)
    connect(endpoint)  # one reconnect: below the threshold
    assert [a["presence"] for a in announced] == ["active", "active"]
    connect(endpoint)  # two reconnects in the window
    assert announced[-1]["presence"] == "degraded"
    assert announced[-1]["reason"] == "2 reconnects in the last 10 min"
    assert fresh(endpoint).presence_announced == "degraded"
