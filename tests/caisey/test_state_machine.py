"""Every status field's table, exhaustively: each allowed move succeeds, each other one is refused
and changes nothing, and a row moved by someone else in between is a race, not an overwrite."""

from __future__ import annotations

import itertools

import pytest

from bridge.models import OUTBOX_TRANSITIONS, OutboxMessage, OutboxStatus
from caisey.state_machine import IllegalTransition, TransitionRace, transition
from endpoints.models import ENDPOINT_TRANSITIONS, EndpointStatus
from sessions_app.models import (
    ACTION_TRANSITIONS,
    FOLLOW_UP_TRANSITIONS,
    PROMPT_TRANSITIONS,
    SESSION_TRANSITIONS,
    ActionStatus,
    FollowUpStatus,
    PromptState,
    SessionStatus,
)
from tests import factories

pytestmark = pytest.mark.django_db


def _session():
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    return factories.support_session(endpoint)


def _action():
    return factories.action(_session())


def _prompt():
    return factories.prompt(_session())


def _outbox():
    return OutboxMessage.all_tenants.filter(endpoint=_session().endpoint).first()


def _follow_up():
    return factories.follow_up(_session())


def _endpoint():
    tenant = factories.tenant()
    return factories.endpoint(factories.client_group(tenant)).endpoint


MACHINES = {
    "action": (_action, ACTION_TRANSITIONS, "status", ActionStatus),
    "prompt": (_prompt, PROMPT_TRANSITIONS, "state", PromptState),
    "outbox": (_outbox, OUTBOX_TRANSITIONS, "status", OutboxStatus),
    "session": (_session, SESSION_TRANSITIONS, "status", SessionStatus),
    "endpoint": (_endpoint, ENDPOINT_TRANSITIONS, "status", EndpointStatus),
    "follow_up": (_follow_up, FOLLOW_UP_TRANSITIONS, "status", FollowUpStatus),
}
CASES = [
    pytest.param(name, current, target, id=f"{name}:{current}->{target}")
    for name, (_, table, _, choices) in MACHINES.items()
    for current, target in itertools.product(choices.values, choices.values)
]


def test_every_state_has_a_row_in_its_table():
    for name, (_, table, _, choices) in MACHINES.items():
        assert set(table) == set(choices.values), name
        assert all(set(targets) <= set(choices.values) for targets in table.values()), name


@pytest.mark.parametrize("name, current, target", CASES)
def test_allowed_moves_succeed_and_others_are_refused_without_a_change(name, current, target):
    make, table, field, _ = MACHINES[name]
    row = make()
    type(row)._base_manager.filter(pk=row.pk).update(**{field: current})
    row.refresh_from_db()
    if target in table[current]:
        transition(row, to=target, table=table, field=field)
        assert getattr(type(row)._base_manager.get(pk=row.pk), field) == target
    else:
        with pytest.raises(IllegalTransition):
            transition(row, to=target, table=table, field=field)
        assert getattr(type(row)._base_manager.get(pk=row.pk), field) == current


@pytest.mark.parametrize("name", MACHINES)
def test_a_row_moved_in_between_is_a_race_and_is_not_overwritten(name):
    make, table, field, _ = MACHINES[name]
    row = make()
    current = getattr(row, field)
    targets = sorted(table[current])
    first, second = targets[0], targets[-1]  # the same one when there is only one way out
    type(row)._base_manager.filter(pk=row.pk).update(**{field: first})  # another process got there first
    with pytest.raises(TransitionRace):
        transition(row, to=second, table=table, field=field)
    assert getattr(type(row)._base_manager.get(pk=row.pk), field) == first
