"""Test setup for the record topics (incidents, review, sharing, public links) under the write guard.

Building a test world is system work (an operator creating tenants, enrolling machines, an agent
reporting output): ``setup_as_system`` runs the shared factories and the agent-side services
that tests call to build state inside ``tenancy.system()``. The services under test are not
wrapped: they bind their tenant themselves (``endpoints.access.acting_for``), so the write guard
(CAISEY_TENANCY_WRITE_GUARD=1) still checks every write they make. Once the factories and the
agent-frame services bind tenants themselves, this fixture changes nothing.
"""

from __future__ import annotations

import functools

import pytest

from caisey import tenancy
from sessions_app.services import actions
from tests import factories

FACTORIES = (
    "tenant",
    "member",
    "client_group",
    "token",
    "endpoint",
    "technician",
    "support_session",
    "action",
    "policy",
)
AGENT_SIDE = ("action_output_receive", "action_result_receive")


def _as_system(function):
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with tenancy.system():
            return function(*args, **kwargs)

    return wrapped


@pytest.fixture(autouse=True)
def setup_as_system(monkeypatch):
    for name in FACTORIES:
        monkeypatch.setattr(factories, name, _as_system(getattr(factories, name)))
    for name in AGENT_SIDE:
        monkeypatch.setattr(actions, name, _as_system(getattr(actions, name)))
