"""Webhooks with real processes: a Celery worker (with beat) sends to an HTTP receiver started by
the test, which checks every signature. The worker is SIGKILLed while a send hangs; a new worker
and the sweep deliver every event, none lost (issue 14: "kills the Celery worker mid-delivery")."""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.stack import wait_for
from tests.integrations.receiver import Receiver

pytestmark = pytest.mark.e2e

FAST = {
    "CAISEY_WEBHOOK_CONNECT_TIMEOUT_S": "1",
    "CAISEY_WEBHOOK_READ_TIMEOUT_S": "3",
    "CAISEY_WEBHOOK_TOTAL_TIMEOUT_S": "4",  # a claim's lease: 2 x 4 + 5 = 13 s
    "CAISEY_WEBHOOK_BACKOFF_BASE_S": "1",
    "CAISEY_WEBHOOK_BACKOFF_CAP_S": "2",
    "CAISEY_WEBHOOK_SWEEP_S": "1",
}


def _send_tests(stack, webhook_id: str, count: int) -> list[str]:
    return stack.json(
        "import json; from django.contrib.auth import get_user_model; from caisey import tenancy;"
        " from integrations import services; from integrations.models import WebhookEndpoint;"
        "u = get_user_model().objects.get(username='acme-admin');\n"
        f"with tenancy.system(): e = WebhookEndpoint.objects.get(pk='{webhook_id}')\n"
        f"print(json.dumps([str(services.webhook_test_send(actor=u, endpoint=e).event_id) for _ in range({count})]))"
    )


@pytest.mark.parametrize("stack", [FAST], indirect=True)
def test_a_worker_killed_mid_delivery_loses_no_event(stack):
    receiver = Receiver(script=["hang"]).start()  # the first request hangs; the rest are answered
    try:
        stack.seed()
        created = stack.json(
            "import json; from django.contrib.auth import get_user_model; from endpoints.models import Tenant;"
            " from integrations import services;"
            "u = get_user_model().objects.get(username='acme-admin'); t = Tenant.all_tenants.get(slug='acme');"
            f"i = services.webhook_create(actor=u, tenant_id=t.pk, url='{receiver.url}', events=['session.opened'],"
            " allow_private=True);"
            "print(json.dumps({'id': str(i.endpoint.pk), 'secret': i.secret}))"
        )
        receiver.secret = created["secret"]
        expected = _send_tests(stack, created["id"], 6)
        wait_for(lambda: len(receiver.received) >= 1, timeout=60, what="the first send, hanging")
        os.killpg(stack.worker.pid, signal.SIGKILL)  # mid-delivery: its pool child dies with it
        stack.worker.wait(timeout=10)
        stack.worker = stack.start_worker()
        wait_for(lambda: set(receiver.delivered_ids()) == set(expected), timeout=90, what="every event delivered")
        seen = [(r.behaviour, r.signature_ok, r.json["id"]) for r in receiver.received]
        assert all(ok for _, ok, _ in seen), seen
        assert seen[0][0] == "hang" and seen[0][2] in expected, seen
        states = stack.json(
            "import json; from caisey import tenancy; from integrations.models import WebhookDelivery;\n"
            "with tenancy.system(): print(json.dumps(sorted(WebhookDelivery.objects.values_list('status', flat=True))))"
        )
        assert states == ["delivered"] * 6, (states, seen)
    finally:
        receiver.stop()


@pytest.mark.parametrize("stack", [FAST], indirect=True)
def test_a_real_agent_coming_and_going_outside_sessions_is_told_by_signed_events(stack):
    """endpoint.back when a real agent connects, endpoint.offline when its process is killed (no
    session open): written with the bridge's presence change, sent by the worker, signed."""
    receiver = Receiver().start()
    try:
        stack.seed()
        created = stack.json(
            "import json; from django.contrib.auth import get_user_model; from endpoints.models import Tenant;"
            " from integrations import services;"
            "u = get_user_model().objects.get(username='acme-admin'); t = Tenant.all_tenants.get(slug='acme');"
            f"i = services.webhook_create(actor=u, tenant_id=t.pk, url='{receiver.url}',"
            " events=['endpoint.back', 'endpoint.offline'], allow_private=True);"
            "print(json.dumps({'id': str(i.endpoint.pk), 'secret': i.secret}))"
        )
        receiver.secret = created["secret"]
        agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="kiosk").start()

        def types() -> list[str]:
            return [r.json["type"] for r in receiver.received if r.json]

        wait_for(lambda: "endpoint.back" in types(), timeout=60, what="endpoint.back after the agent connected")
        agent.kill()
        wait_for(lambda: "endpoint.offline" in types(), timeout=60, what="endpoint.offline after the agent died")
        received = [r for r in receiver.received if r.json]
        assert all(r.signature_ok for r in received), [(r.behaviour, r.signature_ok) for r in received]
        offline = next(r.json for r in received if r.json["type"] == "endpoint.offline")
        assert offline["data"]["endpoint"]["id"] == agent.endpoint_id and offline["data"]["session"] is None
        assert offline["data"]["detail"]["to"] == "offline"
    finally:
        receiver.stop()
