"""Wake or wait with a real server and a real agent: a slow diagnostic queued "without waking"
goes out at the endpoint's lazy check-in and the endpoint stays lazy; "wake now" switches it to
active and sends the action before the check-in it would have waited for."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e

LAZY_S = 30  # the lazy cadence of this stack: long enough that "held until the check-in" shows


def open_without_waking(tech: str, endpoint_id: str) -> str:
    return h.PRELUDE.format(tech=tech) + (
        f"s = sessions.session_open(actor=tech, endpoint=Endpoint.all_tenants.get(pk='{endpoint_id}'),"
        " reason='e2e slow disk', wake=False);"
        "print(json.dumps(str(s.pk)))"
    )


def queue_waiting(tech: str, session_id: str) -> str:
    """Queue a diagnostic that waits for the check-in; prints its id and when it is held until."""
    return h.PRELUDE.format(tech=tech) + (
        "from bridge.models import OutboxMessage;"
        f"s = SupportSession.all_tenants.get(pk='{session_id}');"
        "a = services.action_request(actor=tech, session=s, kind='system_summary', params={}, wake='wait');"
        "row = OutboxMessage.all_tenants.get(pk=a.outbox_id);"
        "print(json.dumps({'id': str(a.pk), 'held_until': row.next_attempt_at.isoformat(),"
        " 'queued_at': a.created_at.isoformat()}))"
    )


def wake(tech: str, action_id: str) -> str:
    return h.PRELUDE.format(tech=tech) + (
        f"services.action_wake(actor=tech, action=Action.all_tenants.get(pk='{action_id}')); print(json.dumps(True))"
    )


def facts(action_id: str) -> str:
    return (
        "import json; from sessions_app.models import Action, TranscriptEntry;"
        f"a = Action.all_tenants.select_related('endpoint').get(pk='{action_id}');"
        "kinds = list(TranscriptEntry.all_tenants.filter(action=a).values_list('kind', flat=True));"
        "print(json.dumps({'status': a.status, 'wake': a.wake, 'mode': a.endpoint.mode,"
        " 'interval': a.endpoint.heartbeat_interval, 'kinds': kinds,"
        " 'dispatched_at': a.dispatched_at.isoformat() if a.dispatched_at else None}))"
    )


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.mark.parametrize("stack", [{"CAISEY_HEARTBEAT_LAZY_S": str(LAZY_S)}], indirect=True)
def test_waiting_diagnostic_runs_at_the_lazy_check_in_and_wake_now_wakes(stack):
    login = stack.seed()
    tech = login["username"]
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="laptop").start()
    wait_for(lambda: "connected as" in agent.log_text(), timeout=60, what="agent connected")
    assert f"mode lazy, heartbeat every {float(LAZY_S)}s" in agent.log_text()
    session = stack.json(open_without_waking(tech, agent.endpoint_id))

    # 1. Without waking: held until the endpoint's next lazy check-in, then run; still lazy.
    queued = stack.json(queue_waiting(tech, session))
    done = wait_for(
        lambda: (f := stack.json(facts(queued["id"])))["status"] == "succeeded" and f,
        timeout=LAZY_S * 4,
        interval=1,
        what="the waiting diagnostic to run",
    )
    assert done["wake"] == "wait" and done["mode"] == "lazy" and done["interval"] == float(LAZY_S)
    assert at(done["dispatched_at"]) >= at(queued["held_until"])  # not sent before the check-in
    assert "action.woken" not in done["kinds"]
    assert "mode set to active" not in agent.log_text()  # the agent was never woken
    waited = (at(done["dispatched_at"]) - at(queued["queued_at"])).total_seconds()
    held = (at(queued["held_until"]) - at(queued["queued_at"])).total_seconds()

    # 2. Wake now: the endpoint goes active and the action goes out before its check-in.
    urgent = stack.json(queue_waiting(tech, session))
    stack.json(wake(tech, urgent["id"]))
    woken = wait_for(
        lambda: (f := stack.json(facts(urgent["id"])))["status"] == "succeeded" and f,
        timeout=LAZY_S * 4,
        interval=0.5,
        what="the woken diagnostic to run",
    )
    assert woken["wake"] == "now" and woken["mode"] == "active" and "action.woken" in woken["kinds"]
    assert at(woken["dispatched_at"]) < at(urgent["held_until"])  # sent before the check-in it waited for
    print(
        f"\nwake or wait (lazy {LAZY_S} s): the waiting action was held {held:.1f} s and sent {waited:.1f} s"
        f" after it was queued; the woken one was sent"
        f" {(at(woken['dispatched_at']) - at(urgent['queued_at'])).total_seconds():.1f} s after it was queued"
        f" ({(at(urgent['held_until']) - at(woken['dispatched_at'])).total_seconds():.1f} s before its check-in)"
    )
    wait_for(lambda: "mode set to active" in agent.log_text(), timeout=30, what="the agent to switch to active")
    wait_for(
        lambda: stack.json(facts(urgent["id"]))["interval"] < LAZY_S,
        timeout=30,
        what="the active cadence recorded for the endpoint",
    )
