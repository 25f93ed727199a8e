"""Presence at session open (issue 15 item 2).

Reproduced by a user: a session opened on a lazy endpoint last seen more than ~30 s ago rendered
"Read-only: <host> is offline" although the agent answered within a second. Opening wakes it; the
agent acknowledges the mode.set (and beats) at once, but its last-seen time reaches the database
only at the next coalesced flush, and the acknowledgement's handler judged the active cadence
(offline 30 s after the last beat) against the last *lazy* beat, 45 s old: offline, announced to
the page. Now the endpoint is waking until the agent answers, and the active cadence's deadline
counts from the answer.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bridge import notify, outbox, presence_sweep
from bridge.models import OutboxMessage, OutboxStatus
from bridge.services import agent_ack_receive, agent_connection_record
from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import AgentMode, Endpoint
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import SupportSession, TranscriptEntry
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced(monkeypatch):
    """The ``endpoint.presence`` payloads told to console pages, in order."""
    payloads: list[dict] = []
    original = notify.console_event

    def capture(**kwargs):
        if kwargs["event"] == "endpoint.presence":
            payloads.append(kwargs["payload"])
        return original(**kwargs)

    monkeypatch.setattr(notify, "console_event", capture)
    return payloads


class World:
    def __init__(self, settings) -> None:
        settings.CAISEY = {**settings.CAISEY, "HEARTBEAT_ACTIVE_S": 10.0, "HEARTBEAT_LAZY_S": 60.0}
        self.tenant = factories.tenant()
        self.endpoint = factories.endpoint(factories.client_group(self.tenant), hostname="vm").endpoint
        self.tech = factories.technician(self.tenant)
        # Connected an hour ago in lazy mode (60 s cadence); its last beat 45 s ago.
        hello = p.Hello(endpoint_id=str(self.endpoint.pk), credential="", agent_version="1.0")
        with tenancy.bind(self.tenant.pk):
            agent_connection_record(
                endpoint=self.fresh(), hello=hello, connection_id=uuid.uuid4().hex, remote_ip="10.0.0.9"
            )
        hour_ago = timezone.now() - timedelta(hours=1)
        self.last_beat = timezone.now() - timedelta(seconds=45)
        Endpoint.all_tenants.filter(pk=self.endpoint.pk).update(
            connected_at=hour_ago, cadence_applied_at=hour_ago, last_seen_at=self.last_beat
        )

    def fresh(self) -> Endpoint:
        return Endpoint.all_tenants.get(pk=self.endpoint.pk)

    def agent_answers(self) -> None:
        """The agent acknowledges the mode.set; its last-seen time is not flushed yet."""
        mode_set = OutboxMessage.all_tenants.get(endpoint=self.endpoint, kind="mode.set", status=OutboxStatus.QUEUED)
        outbox.outbox_claim(endpoint_id=self.endpoint.pk, due_only=False)
        agent_ack_receive(endpoint_id=self.endpoint.pk, message_id=str(mode_set.pk))


@pytest.fixture
def world(settings):
    return World(settings)


def badge(page: str) -> str:
    start = page.index('data-field="presence"')
    return page[page.index(">", start) + 1 : page.index("</span>", start)].strip()


def test_a_session_on_a_lazy_endpoint_last_seen_45_s_ago_opens_waking_then_active(client, world, announced):
    client.force_login(world.tech)
    opened = client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"reason": "slow disk"})
    assert opened.status_code == 302
    session = SupportSession.all_tenants.get(endpoint=world.endpoint)
    assert session.opened_offline is False
    (entry,) = TranscriptEntry.all_tenants.filter(session=session, kind=K.SESSION_OPENED)
    assert entry.data["offline"] is False

    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert badge(page) == "waking"
    assert "Read-only" not in page and 'id="readonly-banner"' not in page
    assert ">Run<" in page.replace("\n", "")  # the run form, not the queue-for-later one
    assert announced[-1]["state"] == "waking"
    assert announced[-1]["since"] == world.fresh().mode_changed_at.isoformat()

    # The sweep leaves it waking: the lazy cadence's deadline (130 s after the last beat) is ahead.
    presence_sweep.run()
    assert world.fresh().presence_announced == "waking"

    world.agent_answers()
    # The answer is written as a sign of life at once; no coalesced flush runs here (no socket).
    answered = world.fresh()
    assert answered.last_seen_at == answered.cadence_applied_at > world.last_beat
    assert announced[-1]["state"] == "active", announced[-1]
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert badge(page) == "active" and "Read-only" not in page
    presence_sweep.run()
    assert world.fresh().presence_announced == "active"


def test_a_woken_endpoint_that_never_answers_is_offline_after_its_old_cadences_deadline(client, world, announced):
    factories.support_session(world.fresh())
    assert world.fresh().presence_announced == "waking"
    # 131 s after the last lazy beat (deadline: 2 beats of 60 s plus 10 s of grace), no answer.
    Endpoint.all_tenants.filter(pk=world.endpoint.pk).update(last_seen_at=timezone.now() - timedelta(seconds=131))
    assert presence_sweep.run() == 1
    assert announced[-1]["state"] == "offline"
    assert announced[-1]["reason"] == "asked to wake, no answer before the deadline of its previous cadence"
    client.force_login(world.tech)
    session = SupportSession.all_tenants.get(endpoint=world.endpoint)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert 'id="readonly-banner"' in page


def test_a_session_opened_without_waking_stays_lazy(client, world):
    client.force_login(world.tech)
    client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"reason": "later", "no_wake": "1"})
    session = SupportSession.all_tenants.get(endpoint=world.endpoint)
    assert world.fresh().mode == AgentMode.LAZY
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert badge(page) == "lazy"
