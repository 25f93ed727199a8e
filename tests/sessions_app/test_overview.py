"""The fleet overview: per client group, endpoints by connectivity, the degraded and offline ones
with why, messages failed to deliver, prompts waiting and expired, open sessions and who holds
them; in a number of queries that does not grow with the fleet."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bridge.models import OutboxMessage, OutboxStatus
from caisey import tenancy
from endpoints.models import AgentMode, Endpoint
from sessions_app.models import Prompt, PromptState
from sessions_app.selectors.overview import fleet_overview
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def seen(endpoint, *, ago=timedelta(0), **more):
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now() - ago, **more)


@pytest.fixture
def fleet():
    tenant = factories.tenant()
    retail = factories.client_group(tenant, name="Retail")
    office = factories.client_group(tenant, name="Head office")
    factories.client_group(tenant, name="Empty client")
    tills = [factories.endpoint(retail, hostname=f"till{n}").endpoint for n in range(3)]
    dc = factories.endpoint(office, hostname="dc01").endpoint
    erp = factories.endpoint(office, hostname="erp01").endpoint
    alice = factories.technician(tenant)
    bob = factories.technician(tenant)
    seen(tills[0], mode=AgentMode.ACTIVE, heartbeat_interval=10)  # active
    seen(tills[1])  # lazy
    seen(tills[2], ago=timedelta(hours=2))  # offline: heartbeats stopped
    seen(dc, mode=AgentMode.ACTIVE, heartbeat_interval=10, connected_at=timezone.now() - timedelta(minutes=10))
    seen(erp, mode=AgentMode.ACTIVE, heartbeat_interval=10)
    s1 = factories.support_session(dc, opened_by=alice, reason="INC-1 logins slow")
    factories.support_session(erp, opened_by=alice, reason="INC-2")
    factories.support_session(tills[0], opened_by=bob, reason="till jam")
    waiting = factories.prompt(s1, actor=alice, title="May we restart the spooler?")
    expired = factories.prompt(s1, actor=alice, title="Earlier question")
    Prompt.all_tenants.filter(pk=expired.pk).update(state=PromptState.EXPIRED)
    # dc01: its oldest message (a diagnostic) waits past the degraded threshold on the current connection.
    factories.action(s1, actor=alice)
    OutboxMessage.all_tenants.filter(endpoint=dc).update(created_at=timezone.now() - timedelta(minutes=5))
    return tenant, {"tills": tills, "dc": dc, "erp": erp, "alice": alice, "bob": bob, "waiting": waiting}


def group(overview, name):
    return next(g for g in overview["groups"] if g["name"] == name)


def test_each_client_group_shows_connectivity_attention_prompts_and_sessions(fleet):
    tenant, w = fleet
    with tenancy.bind(tenant.pk):
        overview = fleet_overview()
    retail, office = group(overview, "Retail"), group(overview, "Head office")
    assert retail["by_state"] == {"active": 1, "lazy": 1, "waking": 0, "degraded": 0, "offline": 1}
    assert [a["hostname"] for a in retail["attention"]] == ["till2"]
    assert retail["attention"][0]["reason"] == "heartbeats stopped without a disconnect"
    assert retail["attention"][0]["since"] is not None
    assert office["by_state"]["degraded"] == 1 and office["by_state"]["active"] == 1
    dc = office["attention"][0]
    assert dc["hostname"] == "dc01" and "oldest unacknowledged message waiting" in dc["reason"] and dc["queue"] >= 1
    assert office["prompts_waiting"] == 1 and office["prompts_expired"] == 1 and retail["prompts_waiting"] == 0
    assert office["open_sessions"] == 2 and office["holders"] == [(w["alice"].username, 2)]
    assert retail["holders"] == [(w["bob"].username, 1)]
    assert {s["hostname"] for s in office["sessions"]} == {"dc01", "erp01"}
    assert group(overview, "Empty client")["endpoints"] == 0
    assert overview["totals"]["endpoints"] == 5 and overview["totals"]["open_sessions"] == 3


def test_failed_deliveries_are_counted_per_group(fleet):
    tenant, w = fleet
    till = w["tills"][2]
    with tenancy.bind(tenant.pk):
        OutboxMessage.objects.filter(endpoint=till).update(status=OutboxStatus.FAILED_TO_DELIVER)
        n = OutboxMessage.objects.filter(endpoint=till).count()
        overview = fleet_overview()
    assert group(overview, "Retail")["failed_to_deliver"] == n


def test_the_overview_costs_the_same_queries_for_a_bigger_fleet(fleet):
    tenant, w = fleet
    counts = []
    for _ in range(2):
        with tenancy.bind(tenant.pk), CaptureQueriesContext(connection) as queries:
            fleet_overview()
        counts.append(len(queries))
        # Grow the fleet: more endpoints, sessions and prompts in both groups.
        retail = w["tills"][0].client_group
        for n in range(6):
            e = factories.endpoint(retail, hostname=f"more{len(counts)}-{n}").endpoint
            seen(e, mode=AgentMode.ACTIVE, heartbeat_interval=10)
            s = factories.support_session(e, opened_by=w["bob"])
            factories.prompt(s, actor=w["bob"])
    assert counts[0] == counts[1], counts
    assert counts[0] <= 12, counts


def test_the_page_is_the_home_link_and_shows_the_figures(fleet, client):
    tenant, w = fleet
    client.force_login(w["alice"])
    page = client.get(reverse("console:overview")).content.decode()
    assert "Fleet overview" in page and "till2" in page and "heartbeats stopped" in page
    assert 'href="/overview/">Overview</a>' in page
    assert page.index("Overview</a>") < page.index("Endpoints</a>")
