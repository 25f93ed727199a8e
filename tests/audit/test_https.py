"""JSON lines over HTTPS to a receiver that misbehaves on command: each failure is bounded,
named as the sink's last error, and loses nothing (the cursor stays; the next run resends)."""

from __future__ import annotations

import pytest

from audit import delivery
from audit.models import AuditRecord, AuditSink
from caisey import tenancy
from tests import factories
from tests.audit.receivers import HttpsReceiver, SyslogReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(tmp_path):
    r = HttpsReceiver(tmp_path / "pki")
    yield r
    r.stop()


def _tenant_with_records():
    tenant = factories.tenant()
    factories.support_session(factories.endpoint(factories.client_group(tenant)).endpoint)
    return tenant


def _journal(tenant) -> list[str]:
    with tenancy.bind(tenant.pk):
        return [str(e) for e in AuditRecord.objects.order_by("seq").values_list("event_id", flat=True)]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("500", "HTTP 500"),
        ("redirect", "HTTP 307"),
        ("hang", "timed out"),
        ("close", "closed the connection"),
    ],
)
def test_a_misbehaving_receiver_loses_nothing(receiver, settings, mode, error):
    settings.CAISEY = {**settings.CAISEY, "AUDIT_SEND_TIMEOUT_S": 1.0}
    tenant = _tenant_with_records()
    sink = factories.audit_sink(
        tenant, kind="json_https", url=receiver.url, ca_pem=receiver.pki.ca_pem.read_text(), allow_private=True
    )
    receiver.mode = mode
    result = delivery.sink_deliver(sink_id=sink.pk)
    assert error in result.error or (mode == "hang" and "did not finish" in result.error), result.error
    with tenancy.bind(tenant.pk):
        assert AuditSink.objects.get(pk=sink.pk).cursor == 0
    receiver.mode = "ok"
    assert not delivery.sink_deliver(sink_id=sink.pk).error
    assert [line["event_id"] for line in receiver.lines] == _journal(tenant)


def test_a_huge_answer_is_not_read_to_its_end(receiver):
    tenant = _tenant_with_records()
    sink = factories.audit_sink(
        tenant, kind="json_https", url=receiver.url, ca_pem=receiver.pki.ca_pem.read_text(), allow_private=True
    )
    receiver.mode = "huge"
    assert not delivery.sink_deliver(sink_id=sink.pk).error
    assert [line["event_id"] for line in receiver.lines] == _journal(tenant)


def test_an_untrusted_certificate_is_refused(receiver):
    tenant = _tenant_with_records()
    sink = factories.audit_sink(tenant, kind="json_https", url=receiver.url, allow_private=True)  # no CA: untrusted
    result = delivery.sink_deliver(sink_id=sink.pk)
    assert "certificate" in result.error
    assert receiver.lines == []


def test_syslog_over_tls_verifies_the_collector(tmp_path):
    syslog = SyslogReceiver(tls_folder=tmp_path / "pki")
    try:
        tenant = _tenant_with_records()
        untrusted = factories.audit_sink(tenant, host="localhost", port=syslog.port, tls=True)
        assert "certificate" in delivery.sink_deliver(sink_id=untrusted.pk).error
        trusted = factories.audit_sink(
            tenant, host="localhost", port=syslog.port, tls=True, ca_pem=syslog.pki.ca_pem.read_text()
        )
        assert not delivery.sink_deliver(sink_id=trusted.pk).error
        import json

        assert [json.loads(f.split(b"] ", 1)[1])["event_id"] for f in syslog.frames] == _journal(tenant)
    finally:
        syslog.stop()


def test_a_batch_is_bounded_in_bytes_and_nothing_is_left_behind(receiver, settings):
    settings.CAISEY = {**settings.CAISEY, "AUDIT_BATCH_BYTES": 3000}
    tenant = _tenant_with_records()
    from endpoints.models import SecurityEventKind
    from endpoints.security_log import security_event_record

    for n in range(6):
        security_event_record(
            tenant_id=tenant.pk,
            kind=SecurityEventKind.LOGIN_FAILED,
            actor=None,
            target=f"{n}",
            detail={"pad": "p" * 1000},
        )
    sink = factories.audit_sink(
        tenant, kind="json_https", url=receiver.url, ca_pem=receiver.pki.ca_pem.read_text(), allow_private=True
    )
    assert not delivery.sink_deliver(sink_id=sink.pk).error
    assert receiver.requests >= 3  # several requests, none over the bound (but a single record)
    assert [line["event_id"] for line in receiver.lines] == _journal(tenant)
