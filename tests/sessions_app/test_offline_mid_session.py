"""An endpoint that goes offline mid-session (issue 10, item 2): an action in flight says since when
the endpoint is unreachable, ends given up by its deadline if it does not return (the sweep used to
skip offline endpoints: "Running" forever), and a result that arrives afterwards is recorded and
shown without reviving the state. The machine's last known state is shown with its time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import Action, ActionStatus, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services.transcript import transcript_verify
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world():
    tenant = factories.tenant()
    enrolled = factories.endpoint(factories.client_group(tenant), hostname="laptop7")
    endpoint = enrolled.endpoint
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(
        last_seen_at=timezone.now(),
        connected_at=timezone.now() - timedelta(minutes=10),
        machine_context={"os": "Linux", "os_release": "Debian 12", "users": ["alice"], "uptime_seconds": 3600},
        context_updated_at=timezone.now() - timedelta(minutes=1),
    )
    tech = factories.technician(tenant)
    session = factories.support_session(Endpoint.all_tenants.get(pk=endpoint.pk), opened_by=tech)
    action = factories.action(session, actor=tech)
    # Delivered and running on the endpoint, due to finish by a deadline in a minute.
    Action.all_tenants.filter(pk=action.pk).update(
        status=ActionStatus.RUNNING,
        dispatched_at=timezone.now(),
        started_at=timezone.now(),
        deadline_at=timezone.now() + timedelta(minutes=1),
    )
    return {"endpoint": endpoint, "tech": tech, "session": session, "action": action}


def drop(endpoint, *, ago: timedelta) -> None:
    """The agent froze ``ago``: its heartbeats stopped, no clean disconnect."""
    Endpoint.all_tenants.filter(pk=endpoint.pk).update(last_seen_at=timezone.now() - ago)


def overdue(action) -> None:
    Action.all_tenants.filter(pk=action.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))


def fresh(action) -> Action:
    return Action.all_tenants.get(pk=action.pk)


def late_result(world) -> None:
    body = p.ActionResult(
        action_id=str(world["action"].pk), status="succeeded", exit_code=0, result={"text": "all good after all"}
    )
    services.action_result_receive(endpoint=world["endpoint"], body=body)


def test_an_action_on_an_endpoint_that_never_returns_is_given_up_by_its_deadline(world):
    drop(world["endpoint"], ago=timedelta(minutes=5))
    assert services.action_deadline_sweep() == 0  # not before its deadline
    overdue(world["action"])
    assert services.action_deadline_sweep() == 1
    action = fresh(world["action"])
    assert action.status == ActionStatus.TIMED_OUT and action.finished_at
    assert action.error.startswith("Given up: endpoint unreachable since ")
    entry = TranscriptEntry.all_tenants.get(action=action, kind="action.timed_out")
    assert entry.actor == "system" and entry.data["why"].startswith("given up: the endpoint was unreachable since")
    assert entry.data["unreachable_since"]
    assert services.action_deadline_sweep() == 0  # once


def test_a_result_that_arrives_after_the_action_was_given_up_is_recorded_and_shown_not_applied(world, client):
    drop(world["endpoint"], ago=timedelta(minutes=5))
    overdue(world["action"])
    services.action_deadline_sweep()
    Endpoint.all_tenants.filter(pk=world["endpoint"].pk).update(last_seen_at=timezone.now())  # it returns
    late_result(world)
    late_result(world)  # a replay changes nothing

    action = fresh(world["action"])
    assert action.status == ActionStatus.TIMED_OUT  # not revived
    assert action.late_result["status"] == "succeeded" and action.late_result["after"] == "given up"
    ignored = TranscriptEntry.all_tenants.filter(action=action, kind="action.result_ignored")
    assert ignored.count() == 2 and ignored.first().data["result"] == {"text": "all good after all"}
    assert transcript_verify(session_id=world["session"].pk)[0]

    client.force_login(world["tech"])
    card = client.get(f"/sessions/{world['session'].pk}/actions/{action.pk}/").content.decode()
    assert "Result arrived after the action was given up" in card
    assert "all good after all" in card and "the action stays timed out" in card


def test_a_running_action_on_an_offline_endpoint_says_since_when_on_the_page_and_its_card(world, client):
    client.force_login(world["tech"])
    page = client.get(f"/sessions/{world['session'].pk}/").content.decode()
    assert "Endpoint unreachable since" not in page and "readonly-banner" not in page

    drop(world["endpoint"], ago=timedelta(minutes=3))
    last_seen = timezone.localtime(Endpoint.all_tenants.get(pk=world["endpoint"].pk).last_seen_at)
    page = client.get(f"/sessions/{world['session'].pk}/").content.decode()
    # Relative, with the full date-time and zone on hover (caisey/templatetags/times.py).
    since = (
        f'<time datetime="{last_seen.isoformat()}" title="{last_seen:%Y-%m-%d %H:%M:%S} UTC" data-relative>3 min ago'
    )
    assert f"Endpoint unreachable since {since}" in page
    assert f"offline since {since}" in page and "readonly-banner" in page
    card = client.get(f"/sessions/{world['session'].pk}/actions/{world['action'].pk}/").content.decode()
    assert "Endpoint unreachable since" in card


def test_the_machines_last_known_state_is_shown_with_its_time(world, client):
    drop(world["endpoint"], ago=timedelta(minutes=3))
    reported = timezone.localtime(Endpoint.all_tenants.get(pk=world["endpoint"].pk).context_updated_at)
    client.force_login(world["tech"])
    page = client.get(f"/sessions/{world['session'].pk}/").content.decode()
    assert "Last known machine state" in page and "reported <time" in page
    assert f'datetime="{reported.isoformat()}" title="{reported:%Y-%m-%d %H:%M:%S} UTC"' in page
    assert "Debian 12" in page and "alice" in page


def test_a_result_reported_before_the_deadline_while_away_is_still_applied(world):
    """Offline is not the end: until the deadline, a result replayed on return completes the action."""
    drop(world["endpoint"], ago=timedelta(minutes=3))
    with tenancy.system():
        assert services.action_deadline_sweep() == 0
    Endpoint.all_tenants.filter(pk=world["endpoint"].pk).update(last_seen_at=timezone.now())
    late_result(world)
    action = fresh(world["action"])
    assert action.status == ActionStatus.SUCCEEDED and action.late_result is None
