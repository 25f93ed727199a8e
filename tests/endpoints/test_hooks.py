"""endpoints.hooks: revocation tells the layers above after the commit, never for a rollback."""

from __future__ import annotations

import pytest
from django.db import transaction

from caisey.actors import Party
from endpoints import hooks, services
from endpoints.models import EndpointStatus
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def revoked(monkeypatch):
    calls = []
    monkeypatch.setattr(hooks, "_revoked", [calls.append])
    return calls


@pytest.fixture
def endpoint():
    return factories.endpoint(factories.client_group(factories.tenant())).endpoint


def test_revoking_rings_the_hooks_after_commit(revoked, endpoint):
    with transaction.atomic():
        services.endpoint_revoke(actor=Party.SYSTEM, endpoint=endpoint, reason="stolen")
        assert revoked == []
    assert revoked == [endpoint.pk]
    assert endpoint.status == EndpointStatus.REVOKED


def test_a_rolled_back_revocation_rings_nothing(revoked, endpoint):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.endpoint_revoke(actor=Party.SYSTEM, endpoint=endpoint, reason="stolen")
        raise RuntimeError("rolled back")
    assert revoked == []


def test_the_bridge_registers_its_hook_once():
    from bridge.handlers import close_revoked_agent

    assert hooks.endpoint_revoked_hooks().count(close_revoked_agent) == 1
    hooks.on_endpoint_revoked(close_revoked_agent)
    assert hooks.endpoint_revoked_hooks().count(close_revoked_agent) == 1
