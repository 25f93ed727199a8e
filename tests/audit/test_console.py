"""The audit stream's console page (tenant admins: sinks, lag, last error, add, enable, disable,
test) and its figures in /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from audit import delivery
from audit.models import AuditSink
from caisey import tenancy
from endpoints.models import Role
from tests import factories
from tests.audit.receivers import SyslogReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = SyslogReceiver()
    yield r
    r.stop()


@pytest.fixture
def admin_client(client):
    tenant = factories.tenant()
    admin = factories.member(tenant, role=Role.ADMIN)
    client.force_login(admin.user)
    client.tenant = tenant
    client.admin = admin.user
    return client


def test_an_admin_adds_a_sink_and_sees_its_lag_and_last_error(admin_client, receiver):
    tenant = admin_client.tenant
    factories.support_session(factories.endpoint(factories.client_group(tenant)).endpoint)
    response = admin_client.post(
        "/audit/create",
        {"name": "Wazuh", "kind": "syslog_tcp", "host": "127.0.0.1", "port": str(receiver.port), "allow_private": "on"},
        follow=True,
    )
    assert response.status_code == 200
    with tenancy.bind(tenant.pk):
        sink = AuditSink.objects.get(name="Wazuh")
    assert (sink.host, sink.port, sink.tls, sink.allow_private, sink.enabled) == (
        "127.0.0.1",
        receiver.port,
        False,
        True,
        True,
    )
    page = admin_client.get("/audit/").content.decode()
    assert "Wazuh" in page and f"tcp://127.0.0.1:{receiver.port}" in page
    assert 'data-field="lag-records">0 records' not in page  # the session's entries wait

    receiver.mode = "reset"
    delivery.sink_deliver(sink_id=sink.pk)
    page = admin_client.get("/audit/").content.decode()
    assert "failed" in page  # the last error, in words

    receiver.mode = "ok"
    delivery.sink_deliver(sink_id=sink.pk)
    page = admin_client.get("/audit/").content.decode()
    assert 'data-field="lag-records">0 records' in page and 'data-field="last-error">–' in page


def test_bad_input_is_refused_with_a_message_and_changes_nothing(admin_client):
    for body in (
        {"name": "x", "kind": "syslog_tcp", "host": "a.example", "port": "not a port"},
        {"name": "x", "kind": "json_https", "url": "http://plain.example/"},
        {"name": "", "kind": "syslog_tcp", "host": "a.example", "port": "514"},
    ):
        response = admin_client.post("/audit/create", body, follow=True)
        assert response.status_code == 200
        assert [m.level_tag for m in response.context["messages"]] == ["error"]
    with tenancy.bind(admin_client.tenant.pk):
        assert not AuditSink.objects.exists()


def test_enable_disable_and_a_test_record(admin_client, receiver):
    sink = factories.audit_sink(admin_client.tenant, actor=admin_client.admin, port=receiver.port)
    admin_client.post(f"/audit/{sink.pk}/disable")
    with tenancy.bind(admin_client.tenant.pk):
        assert not AuditSink.objects.get(pk=sink.pk).enabled
    admin_client.post(f"/audit/{sink.pk}/enable")
    with tenancy.bind(admin_client.tenant.pk):
        assert AuditSink.objects.get(pk=sink.pk).enabled
    response = admin_client.post(f"/audit/{sink.pk}/test", follow=True)
    assert "Test record sent" in response.content.decode()
    assert len(receiver.frames) == 1 and b"audit.test" in receiver.frames[0]
    with tenancy.bind(admin_client.tenant.pk):
        assert AuditSink.objects.get(pk=sink.pk).cursor == 0  # a test moves no cursor

    receiver.mode = "reset"
    response = admin_client.post(f"/audit/{sink.pk}/test", follow=True)
    assert "Test record not accepted" in response.content.decode()


@pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.VIEWER])
def test_only_admins_reach_the_page(client, role):
    tenant = factories.tenant()
    sink = factories.audit_sink(tenant)
    client.force_login(factories.member(tenant, role=role).user)
    assert client.get("/audit/").status_code == 403
    assert client.post("/audit/create", {"name": "x", "kind": "syslog_tcp"}).status_code == 403
    assert client.post(f"/audit/{sink.pk}/disable").status_code == 403
    with tenancy.bind(tenant.pk):
        assert AuditSink.objects.get(pk=sink.pk).enabled


def test_metrics_show_each_sinks_lag(client, settings, receiver):
    settings.CAISEY = {**settings.CAISEY, "METRICS_TOKEN": "t" * 40}
    tenant = factories.tenant()
    factories.support_session(factories.endpoint(factories.client_group(tenant)).endpoint)
    behind = factories.audit_sink(tenant, port=receiver.port, allow_private=False)  # refused: stays behind
    current = factories.audit_sink(tenant, port=receiver.port)
    delivery.sink_deliver(sink_id=behind.pk)
    delivery.sink_deliver(sink_id=current.pk)
    body = client.get("/metrics", headers={"Authorization": "Bearer " + "t" * 40}).content.decode()
    samples = {
        (s.name, s.labels["sink"]): s.value
        for family in text_string_to_metric_families(body)
        if family.name.startswith("caisey_audit_sink")
        for s in family.samples
    }
    assert samples[("caisey_audit_sink_lag_records", str(behind.pk))] > 0
    assert samples[("caisey_audit_sink_lag_seconds", str(behind.pk))] >= 0
    assert samples[("caisey_audit_sink_failing", str(behind.pk))] == 1
    assert samples[("caisey_audit_sink_lag_records", str(current.pk))] == 0
    assert samples[("caisey_audit_sink_lag_seconds", str(current.pk))] == 0


def test_sink_changes_are_security_events(admin_client, receiver):
    from endpoints.models import SecurityEvent, SecurityEventKind

    admin_client.post(
        "/audit/create",
        {"name": "SIEM", "kind": "syslog_tcp", "host": "127.0.0.1", "port": str(receiver.port), "allow_private": "on"},
    )
    with tenancy.bind(admin_client.tenant.pk):
        sink = AuditSink.objects.get(name="SIEM")
    admin_client.post(f"/audit/{sink.pk}/disable")
    with tenancy.bind(admin_client.tenant.pk):
        events = list(SecurityEvent.objects.filter(kind=SecurityEventKind.POLICY_CHANGED).order_by("pk"))
    assert [e.detail["change"] for e in events] == ["created", "disabled"]
    assert events[0].detail["destination"] == f"tcp://127.0.0.1:{receiver.port}" and events[0].address == "127.0.0.1"


def test_an_admin_edits_a_sink_keeping_its_cursor_and_deletes_it(admin_client):
    tenant = admin_client.tenant
    sink = factories.audit_sink(tenant, actor=admin_client.admin, name="Old SIEM")
    AuditSink.all_tenants.filter(pk=sink.pk).update(cursor=41, last_error="refused")
    page = admin_client.get("/audit/").content.decode()
    assert f'action="/audit/{sink.pk}/update"' in page and f'id="sink{sink.pk}-name"' in page
    response = admin_client.post(
        f"/audit/{sink.pk}/update",
        {"name": "New SIEM", "kind": "json_https", "url": "https://siem.example/ingest"},
        follow=True,
    )
    assert response.status_code == 200
    sink.refresh_from_db()
    assert (sink.name, sink.kind, sink.url, sink.cursor, sink.last_error) == (
        "New SIEM",
        "json_https",
        "https://siem.example/ingest",
        41,
        "",
    )
    with tenancy.bind(tenant.pk):
        from endpoints.models import SecurityEvent

        change = SecurityEvent.objects.filter(target__contains="New SIEM").latest("at")
    assert change.detail["change"] == "updated" and change.detail["destination"] == "https://siem.example/ingest"
    assert change.detail["previous_destination"].startswith(("tcp://", "tls://"))

    # Bad input changes nothing.
    admin_client.post(f"/audit/{sink.pk}/update", {"name": "New SIEM", "kind": "json_https", "url": "http://plain"})
    sink.refresh_from_db()
    assert sink.url == "https://siem.example/ingest"

    assert admin_client.post(f"/audit/{sink.pk}/delete", follow=True).status_code == 200
    assert not AuditSink.all_tenants.filter(pk=sink.pk).exists()
    assert admin_client.post(f"/audit/{sink.pk}/delete").status_code == 404


def test_a_technician_can_neither_edit_nor_delete_a_sink(client):
    tenant = factories.tenant()
    sink = factories.audit_sink(tenant)
    client.force_login(factories.member(tenant, role=Role.TECHNICIAN).user)
    assert client.post(f"/audit/{sink.pk}/update", {"name": "x", "kind": "json_https"}).status_code == 403
    assert client.post(f"/audit/{sink.pk}/delete").status_code == 403
    assert AuditSink.all_tenants.filter(pk=sink.pk).exists()


def test_ca_text_that_is_not_ascii_is_refused_as_not_pem(admin_client):
    """PEM is ASCII: other text is refused with the message, not a server error (Schemathesis found it)."""
    response = admin_client.post(
        "/audit/create",
        {"name": "x", "kind": "json_https", "url": "https://siem.example/in", "ca_pem": "-----BEGIN CÉRTIFICATE-----"},
        follow=True,
    )
    assert response.status_code == 200 and "not PEM certificates" in response.content.decode()
    assert not AuditSink.all_tenants.exists()
