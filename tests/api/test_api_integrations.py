"""The REST API of webhook destinations and audit sinks (/api/v1/webhooks/, /api/v1/audit-sinks/):
tenant admins only, the console's rules (secrets shown once, checked destinations, a security event
per change), another tenant's objects not found, bad input refused with nothing changed."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from audit.models import AuditSink
from caisey import tenancy
from endpoints.models import Role, SecurityEvent
from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.secretbox import unseal
from tests import factories

pytestmark = pytest.mark.django_db
V1 = "/api/v1"


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.api_token(user)[1]}")
    return client


@pytest.fixture
def tenant():
    return factories.tenant("API Hooks MSP")


@pytest.fixture
def admin(tenant):
    return client_for(factories.member(tenant, role=Role.ADMIN).user)


def _security(tenant, kind: str) -> list[SecurityEvent]:
    with tenancy.bind(tenant.pk):
        return list(SecurityEvent.objects.filter(kind=kind).order_by("at", "pk"))


def test_an_admin_manages_a_webhook_and_sees_its_secret_once(admin, tenant):
    created = admin.post(
        f"{V1}/webhooks/",
        {"url": "https://1.1.1.1/psa", "events": ["session.opened", "security.event"], "description": "PSA"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and created["Cache-Control"] == "no-store"
    hook_id = body["id"]
    with tenancy.bind(tenant.pk):
        assert unseal(WebhookEndpoint.objects.get(pk=hook_id).secret_current) == body["secret"]
    shown = admin.get(f"{V1}/webhooks/{hook_id}/").json()
    assert "secret" not in shown and shown["events"] == ["security.event", "session.opened"]
    assert [w["id"] for w in admin.get(f"{V1}/webhooks/").json()["results"]] == [hook_id]

    changed = admin.patch(
        f"{V1}/webhooks/{hook_id}/", {"events": ["bulk_run.finished"], "enabled": False}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["events"] == ["bulk_run.finished"]
    assert changed.json()["enabled"] is False and changed.json()["description"] == "PSA"

    rotated = admin.post(f"{V1}/webhooks/{hook_id}/rotate-secret/")
    assert rotated.status_code == 200 and rotated.json()["secret"] != body["secret"]
    assert rotated.json()["rotating_until"] is not None

    sent = admin.post(f"{V1}/webhooks/{hook_id}/test/")
    assert sent.status_code == 202 and sent.json()["event_type"] == "webhook.test"
    log = admin.get(f"{V1}/webhooks/{hook_id}/deliveries/", {"status": "queued"}).json()
    # Newest first; the older one is the security event of the destination's own creation.
    assert [d["event_type"] for d in log["results"]] == ["webhook.test", "security.event"]
    assert log["results"][0]["id"] == sent.json()["id"]
    with tenancy.bind(tenant.pk):
        WebhookDelivery.objects.filter(pk=sent.json()["id"]).update(status="given_up", attempts=12)
    again = admin.post(f"{V1}/webhooks/{hook_id}/redeliver/", {"delivery": sent.json()["id"]}, format="json")
    assert again.status_code == 202 and (again.json()["status"], again.json()["attempts"]) == ("queued", 0)
    assert again.json()["event_id"] == sent.json()["event_id"]

    assert admin.delete(f"{V1}/webhooks/{hook_id}/").status_code == 204
    assert admin.get(f"{V1}/webhooks/{hook_id}/").status_code == 404
    changes = [e.detail["change"] for e in _security(tenant, "webhook_changed")]
    assert changes == ["created", "updated", "disabled", "secret rotated", "deleted"]


def test_bad_webhook_input_is_refused_and_changes_nothing(admin, tenant):
    for body in (
        {"url": "https://1.1.1.1/a", "events": ["no.such.event"]},
        {"url": "https://1.1.1.1/a", "events": []},
        {"url": "https://127.0.0.1/a", "events": ["session.opened"]},  # a loopback address, not allowed
        {"url": "https://1.1.1.1/a", "events": ["session.closed"], "format": "slack"},  # no chat form for it
        {"url": "ftp://1.1.1.1/a", "events": ["session.opened"]},
    ):
        response = admin.post(f"{V1}/webhooks/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"] in ("invalid_request", "rejected")
    with tenancy.bind(tenant.pk):
        assert not WebhookEndpoint.objects.exists()
    hook = factories.webhook(tenant)[0]
    assert admin.patch(f"{V1}/webhooks/{hook.pk}/", {"url": "https://10.0.0.1/x"}, format="json").status_code == 400
    hook.refresh_from_db()
    assert hook.url == "https://1.1.1.1/hook"


def test_technicians_viewers_and_other_tenants_reach_no_webhook_or_sink(tenant):
    hook, delivery = factories.webhook(tenant)
    sink = factories.audit_sink(tenant)
    for role in (Role.TECHNICIAN, Role.VIEWER):
        client = client_for(factories.member(tenant, role=role).user)
        assert client.get(f"{V1}/webhooks/").status_code == 403
        assert client.get(f"{V1}/webhooks/{hook.pk}/").status_code == 403
        assert client.get(f"{V1}/audit-sinks/").status_code == 403
        assert client.get(f"{V1}/audit-sinks/{sink.pk}/").status_code == 403
        assert client.post(f"{V1}/webhooks/", {"url": "https://1.1.1.1/x", "events": ["session.opened"]}).status_code
    rival = client_for(factories.member(factories.tenant("Rival"), role=Role.ADMIN).user)
    assert rival.get(f"{V1}/webhooks/").json()["results"] == []
    assert rival.get(f"{V1}/audit-sinks/").json()["results"] == []
    for method, url in (
        ("get", f"{V1}/webhooks/{hook.pk}/"),
        ("delete", f"{V1}/webhooks/{hook.pk}/"),
        ("get", f"{V1}/webhooks/{hook.pk}/deliveries/"),
        ("get", f"{V1}/audit-sinks/{sink.pk}/"),
        ("delete", f"{V1}/audit-sinks/{sink.pk}/"),
        ("post", f"{V1}/audit-sinks/{sink.pk}/test/"),
    ):
        assert getattr(rival, method)(url).status_code == 404, url
    # The rival's own destination with this tenant's delivery: not found either.
    own = client_for(factories.member(tenant, role=Role.ADMIN).user)
    other_hook = factories.webhook(tenant, url="https://1.1.1.1/other")[0]
    response = own.post(f"{V1}/webhooks/{other_hook.pk}/redeliver/", {"delivery": delivery.pk}, format="json")
    assert response.status_code == 404
    assert WebhookEndpoint.all_tenants.filter(pk=hook.pk).exists() and AuditSink.all_tenants.filter(pk=sink.pk).exists()


def test_an_admin_manages_a_sink_and_reads_its_lag(admin, tenant):
    created = admin.post(
        f"{V1}/audit-sinks/",
        {"name": "Wazuh", "kind": "syslog_tcp", "host": "127.0.0.1", "port": 9, "tls": False, "allow_private": True},
        format="json",
    )
    assert created.status_code == 201, created.content
    sink = created.json()
    assert (sink["destination"], sink["enabled"], sink["cursor"]) == ("tcp://127.0.0.1:9", True, 0)
    assert sink["lag_records"] >= 1  # its own creation is a security event in the journal
    AuditSink.all_tenants.filter(pk=sink["id"]).update(cursor=7, last_error="refused")

    changed = admin.patch(
        f"{V1}/audit-sinks/{sink['id']}/", {"kind": "json_https", "url": "https://siem.example/in"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["destination"], changed.json()["cursor"], changed.json()["last_error"]) == (
        "https://siem.example/in",
        7,
        "",
    )
    assert changed.json()["name"] == "Wazuh"  # what the PATCH did not name stays
    off = admin.patch(f"{V1}/audit-sinks/{sink['id']}/", {"enabled": False}, format="json")
    assert off.json()["enabled"] is False

    bad = admin.patch(f"{V1}/audit-sinks/{sink['id']}/", {"url": "http://plain.example/"}, format="json")
    assert bad.status_code == 400
    assert admin.get(f"{V1}/audit-sinks/{sink['id']}/").json()["url"] == "https://siem.example/in"
    assert admin.get(f"{V1}/audit-sinks/999999999/").status_code == 404
    assert admin.get(f"{V1}/audit-sinks/not-a-number/").status_code == 404

    assert admin.delete(f"{V1}/audit-sinks/{sink['id']}/").status_code == 204
    assert admin.get(f"{V1}/audit-sinks/").json()["results"] == []
    changes = [e.detail["change"] for e in _security(tenant, "policy_changed") if "audit_sink" in e.detail]
    assert changes == ["created", "updated", "disabled", "deleted"]


def test_a_sink_test_says_whether_the_collector_took_it(admin, tenant):
    sink = factories.audit_sink(tenant, host="127.0.0.1", port=9)  # nothing listens on the discard port
    response = admin.post(f"{V1}/audit-sinks/{sink.pk}/test/")
    assert response.status_code == 200 and response.json()["ok"] is False
    assert "not accepted" in response.json()["message"]
