from __future__ import annotations

import pytest

from endpoints.models import Role
from integrations import services
from tests import factories
from tests.integrations.receiver import Receiver


@pytest.fixture
def fast_webhooks(settings):
    """Short bounds so the misbehaving-receiver cases end quickly (the defaults are 5/10/15 s)."""
    settings.CAISEY = {
        **settings.CAISEY,
        "WEBHOOK_CONNECT_TIMEOUT_S": 1.0,
        "WEBHOOK_READ_TIMEOUT_S": 1.0,
        "WEBHOOK_TOTAL_TIMEOUT_S": 2.0,
        "WEBHOOK_MAX_ATTEMPTS": 3,
        "WEBHOOK_MAX_RESPONSE_BYTES": 64 * 1024,
        "WEBHOOK_DISABLE_AFTER_S": 24 * 3600.0,
    }


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def tenant(db):
    return factories.tenant("Hooks MSP")


@pytest.fixture
def admin(tenant):
    return factories.member(tenant, role=Role.ADMIN).user


@pytest.fixture
def destination(admin, tenant, receiver):
    """A JSON destination for every event but security events (the tests' own set-up, adding other
    destinations, writes those), at the receiver (a loopback address: allowed explicitly)."""
    from integrations.events import EVENT_TYPES, SECURITY_EVENT

    events = [t for t in EVENT_TYPES if t != SECURITY_EVENT]
    issued = services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url=receiver.url, events=events, allow_private=True
    )
    receiver.secret = issued.secret
    return issued.endpoint
