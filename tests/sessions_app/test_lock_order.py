"""The lock order (sessions_app/services/locks.py): a session's row before its prompts, actions
and their outbox rows, so a technician's click and the bridge's group commit over the same
session wait for each other instead of deadlocking. PostgreSQL only: SQLite has no row locks."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from bridge import outbox
from bridge.models import OutboxMessage
from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import Prompt, PromptState, SupportSession
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts
from sessions_app.services import sessions
from tests import factories

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connections["default"].vendor != "postgresql",
        reason="needs PostgreSQL (row locks, deadlock detection): runs in the PostgreSQL phase of .ci/run",
    ),
]


def _two_prompts():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    factories.policy(group, requires="shell", deadline_s=600)
    enrolled = factories.endpoint(group, hostname="storm-1")
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(
        last_seen_at=timezone.now(), machine_context={"user_logged_in": True}
    )
    tech = factories.technician(tenant)
    session = sessions.session_open(actor=tech, endpoint=enrolled.endpoint, reason="storm")
    actions = [
        services.action_request(actor=tech, session=session, kind="shell", params={"command": f"echo {n}"})
        for n in range(2)
    ]
    shown = [Prompt.all_tenants.get(action=a) for a in actions]
    for prompt in shown:
        outbox.outbox_ack(endpoint_id=prompt.endpoint_id, message_id=prompt.outbox_id)  # delivered
    return tech, enrolled.endpoint, [Prompt.all_tenants.get(pk=prompt.pk) for prompt in shown]


def _in_thread(target, errors: list) -> threading.Thread:
    def run():
        try:
            target()
        except Exception as exc:  # reported by the test's assertion
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_technician_cancelling_a_prompt_while_the_bridge_applies_reports_of_its_session_waits_not_deadlocks():
    # What CI met: the group commit applied a report of the first prompt (locking the session to
    # extend its transcript), the technician cancelled the second (it locked the prompt, then
    # wanted the session), and the batch went on to the second prompt: deadlock detected.
    tech, endpoint, (first, second) = _two_prompts()
    errors: list = []
    session_held, cancel_started = threading.Event(), threading.Event()

    def bridge_batch():
        with transaction.atomic():
            prompts.prompt_runtime_update(endpoint=endpoint, body=p.PromptUpdate(str(first.pk), "acknowledged"))
            session_held.set()
            cancel_started.wait(10)
            time.sleep(0.5)  # the technician's cancel is under way (and waiting) meanwhile
            prompts.prompt_runtime_update(endpoint=endpoint, body=p.PromptUpdate(str(second.pk), "acknowledged"))

    def technician():
        session_held.wait(10)
        cancel_started.set()
        prompts.prompt_cancel(actor=tech, prompt=second)

    threads = [_in_thread(bridge_batch, errors), _in_thread(technician, errors)]
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Prompt.all_tenants.get(pk=first.pk).state == PromptState.ACKNOWLEDGED
    assert Prompt.all_tenants.get(pk=second.pk).state == PromptState.CANCELLED  # after the batch committed


def test_an_acknowledgement_waits_for_the_session_before_it_locks_the_outbox_row():
    # The owner's lock order holds for the bridge too (bridge.registry.owner_lock): an ack of a
    # prompt's message waits at the prompt's session, not holding the message's row meanwhile.
    tech, endpoint, (first, _) = _two_prompts()
    with tenancy.bind(first.tenant_id):
        reissued = prompts.prompt_reissue(actor=tech, prompt=first)  # a fresh show message, unacknowledged
    message_id = Prompt.all_tenants.get(pk=reissued.pk).outbox_id
    errors: list = []
    session_held, release = threading.Event(), threading.Event()
    acked: list = []

    def console():
        with transaction.atomic(), tenancy.bind(first.tenant_id):
            list(SupportSession.objects.select_for_update().filter(pk=first.session_id))
            session_held.set()
            release.wait(10)

    def agent_ack():
        session_held.wait(10)
        acked.append(outbox.outbox_ack(endpoint_id=endpoint.pk, message_id=message_id))

    threads = [_in_thread(console, errors), _in_thread(agent_ack, errors)]
    try:
        session_held.wait(10)
        time.sleep(0.5)  # the ack is waiting by now
        assert not acked
        # The message's row is free: the waiting ack took the session first, not the row.
        with transaction.atomic():
            row = OutboxMessage.all_tenants.select_for_update(nowait=True).get(pk=message_id)
        assert row.status != "acked"
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert acked and acked[0] is not None
    assert Prompt.all_tenants.get(pk=reissued.pk).state == PromptState.DELIVERED
