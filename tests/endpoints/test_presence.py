"""Presence derivation around a wake-up (issue 15 item 2).

A lazy endpoint (60 s cadence: offline 130 s after its last beat) last seen 45 s ago is woken. It
is waking until the agent answers at the active cadence, offline only if the old cadence's
deadline passes unanswered, and active once it answers, with the active deadline counted from the
answer: 45 s is more than the active cadence's 30 s, which the old derivation measured from the
last lazy beat and so read the endpoint offline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from endpoints.models import AgentMode, Endpoint, EndpointStatus, Presence
from endpoints.presence import offline_after, offline_at, presence_of

LAZY_S, ACTIVE_S = 60.0, 10.0


@pytest.fixture(autouse=True)
def cadences(settings):
    settings.CAISEY = {
        **settings.CAISEY,
        "HEARTBEAT_ACTIVE_S": ACTIVE_S,
        "HEARTBEAT_LAZY_S": LAZY_S,
        "PRESENCE_MISSED_BEATS": 2.0,
        "PRESENCE_GRACE_S": 10.0,
    }


NOW = timezone.now()


def lazy_endpoint(*, seen_ago: float, connected_ago: float = 3600) -> Endpoint:
    """Connected an hour ago in lazy mode, last beat ``seen_ago`` seconds before NOW."""
    connected = NOW - timedelta(seconds=connected_ago)
    return Endpoint(
        status=EndpointStatus.ENROLLED,
        mode=AgentMode.LAZY,
        heartbeat_interval=LAZY_S,
        connected_at=connected,
        cadence_applied_at=connected,
        last_seen_at=NOW - timedelta(seconds=seen_ago),
    )


def wake(endpoint: Endpoint, at: datetime = NOW) -> Endpoint:
    """What endpoint_mode_change writes: the mode and when; the cadence stays the agent's."""
    endpoint.mode, endpoint.mode_changed_at = AgentMode.ACTIVE, at
    return endpoint


def answer(endpoint: Endpoint, at: datetime) -> Endpoint:
    """The agent acknowledged the mode.set: what endpoint_interval_record writes (the answer is a
    sign of life, written at once rather than at the coalesced last-seen flush)."""
    endpoint.heartbeat_interval, endpoint.cadence_applied_at = ACTIVE_S, at
    endpoint.last_seen_at = max(endpoint.last_seen_at, at)
    return endpoint


def test_a_lazy_endpoint_last_seen_45_s_ago_is_lazy_before_the_wake():
    assert presence_of(lazy_endpoint(seen_ago=45), NOW) == Presence.LAZY


def test_woken_just_now_it_is_waking_not_offline():
    endpoint = wake(lazy_endpoint(seen_ago=45))
    assert 45 > offline_after(ACTIVE_S).total_seconds()  # what made it read offline before
    assert presence_of(endpoint, NOW) == Presence.WAKING
    assert presence_of(endpoint, NOW + timedelta(seconds=80)) == Presence.WAKING  # 125 s after its last beat


def test_waking_ends_offline_once_the_old_cadences_deadline_passes_unanswered():
    endpoint = wake(lazy_endpoint(seen_ago=45))
    deadline = endpoint.last_seen_at + offline_after(LAZY_S)
    assert offline_at(endpoint) == deadline
    assert presence_of(endpoint, deadline) == Presence.WAKING
    assert presence_of(endpoint, deadline + timedelta(milliseconds=1)) == Presence.OFFLINE


def test_the_agents_answer_at_the_new_cadence_makes_it_active():
    endpoint = answer(wake(lazy_endpoint(seen_ago=45)), NOW + timedelta(milliseconds=300))
    assert presence_of(endpoint, NOW + timedelta(seconds=1)) == Presence.ACTIVE
    # From then on the active cadence's deadline, counted from the answer.
    assert offline_at(endpoint) == endpoint.cadence_applied_at + offline_after(ACTIVE_S)
    assert presence_of(endpoint, offline_at(endpoint) + timedelta(milliseconds=1)) == Presence.OFFLINE


def test_a_beat_at_the_new_cadence_keeps_it_active():
    endpoint = answer(wake(lazy_endpoint(seen_ago=45)), NOW + timedelta(milliseconds=300))
    endpoint.last_seen_at = NOW + timedelta(seconds=25)
    assert presence_of(endpoint, NOW + timedelta(seconds=50)) == Presence.ACTIVE


def test_an_answer_to_an_earlier_wake_does_not_end_a_later_one():
    endpoint = answer(wake(lazy_endpoint(seen_ago=45), at=NOW - timedelta(seconds=5)), NOW - timedelta(seconds=4))
    endpoint.mode = AgentMode.LAZY  # rested, then woken again: the agent has not answered since
    wake(endpoint, at=NOW)
    assert presence_of(endpoint, NOW + timedelta(seconds=1)) == Presence.WAKING


def test_a_closed_connection_is_offline_even_while_waking():
    endpoint = wake(lazy_endpoint(seen_ago=45))
    endpoint.disconnected_at = NOW - timedelta(seconds=1)
    assert presence_of(endpoint, NOW) == Presence.OFFLINE


def test_resting_an_active_endpoint_is_lazy_at_once_judged_on_the_active_cadence_until_it_answers():
    endpoint = Endpoint(
        status=EndpointStatus.ENROLLED,
        mode=AgentMode.LAZY,
        mode_changed_at=NOW,
        heartbeat_interval=ACTIVE_S,
        cadence_applied_at=NOW - timedelta(minutes=5),
        last_seen_at=NOW - timedelta(seconds=5),
    )
    assert presence_of(endpoint, NOW) == Presence.LAZY
