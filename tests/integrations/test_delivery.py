"""Delivery against a real HTTP receiver on a loopback socket (started by the test), which checks
signatures and misbehaves on command: every failure is bounded, recorded, retried with backoff,
given up after the budget, and loses nothing; a failing destination is disabled after failing
for the configured time, and tells the tenant's admins."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from caisey import tenancy
from endpoints.models import SecurityEvent, SecurityEventKind
from integrations import delivery, services
from integrations.delivery import backoff, deliver
from integrations.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tests import factories

pytestmark = pytest.mark.usefixtures("fast_webhooks")


def _make_due(*rows: WebhookDelivery) -> None:
    """What time passing does: the rows' retry and their destination's backoff are due now."""
    with tenancy.system():
        WebhookDelivery.objects.filter(pk__in=[r.pk for r in rows]).update(next_attempt_at=timezone.now())
        WebhookEndpoint.objects.update(retry_after=None)


def _row(pk) -> WebhookDelivery:
    with tenancy.system():
        return WebhookDelivery.objects.get(pk=pk)


@pytest.fixture
def event(admin, destination):
    """One queued delivery to the receiver (the console's test event)."""
    return services.webhook_test_send(actor=admin, endpoint=destination)


def test_a_delivery_is_signed_and_recorded(event, receiver):
    assert deliver(event.pk) == "delivered"
    (got,) = receiver.received
    assert got.signature_ok
    assert got.json["id"] == str(event.event_id) and got.json["type"] == "webhook.test"
    assert got.headers["Caisey-Event-Id"] == str(event.event_id)
    row = _row(event.pk)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 1, 204, "")
    assert row.latency_ms is not None and row.delivered_at is not None
    # Idempotent: the task delivered twice sends once.
    assert deliver(event.pk) == "done" and len(receiver.received) == 1


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("500", "answered HTTP 500"),
        ("redirect", "redirects"),
        ("hang", "timed out"),
        ("drip", "no complete answer within"),
        ("close", "RemoteProtocolError"),
    ],
)
def test_each_misbehaviour_is_a_bounded_failed_attempt_and_the_event_still_arrives(event, receiver, behaviour, error):
    receiver.script = [behaviour]
    assert deliver(event.pk) == "failed"
    row = _row(event.pk)
    assert row.status == DeliveryStatus.FAILED and row.attempts == 1
    assert error in row.last_error
    assert row.next_attempt_at > timezone.now()
    # Not due yet: a second task does nothing, and the destination backs off.
    assert deliver(event.pk) == "not due"
    with tenancy.system():
        assert WebhookEndpoint.objects.get(pk=row.endpoint_id).failing_since is not None
    if behaviour == "redirect":
        assert len(receiver.received) == 1  # the redirect was not followed anywhere
    _make_due(row)
    assert deliver(event.pk) == "delivered"
    assert receiver.delivered_ids() == [str(event.event_id)]
    with tenancy.system():
        assert WebhookEndpoint.objects.get(pk=row.endpoint_id).failing_since is None


def test_a_huge_answer_is_read_only_up_to_the_cap(event, receiver):
    receiver.script = ["huge"]
    assert deliver(event.pk) == "delivered"  # a 200, whose endless body was cut at 64 KB
    assert _row(event.pk).last_status_code == 200


def test_a_bad_certificate_is_a_failure(admin, tenant, tmp_path, fast_webhooks):
    """TLS is verified: a receiver whose certificate no trusted authority signed is not sent to."""
    import ssl

    from tests.tls import make_pki

    pki = make_pki(tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    handshakes: list[str] = []

    def serve():
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError) as exc:
            handshakes.append(type(exc).__name__)

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    hook = services.webhook_create(
        actor=admin,
        tenant_id=tenant.pk,
        url=f"https://127.0.0.1:{port}/hook",
        events=["session.opened"],
        allow_private=True,
    ).endpoint
    row = services.webhook_test_send(actor=admin, endpoint=hook)
    assert deliver(row.pk) == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in _row(row.pk).last_error or "certificate" in _row(row.pk).last_error.lower()
    listener.close()


def test_a_hanging_destination_holds_one_attempt_and_never_delays_another(admin, tenant, destination, receiver):
    """While a destination backs off, its other due rows wait with it (no attempt counted, no
    connection made), and another destination's rows go out at once."""
    from tests.integrations.receiver import Receiver

    other = Receiver().start()
    try:
        issued = services.webhook_create(
            actor=admin, tenant_id=tenant.pk, url=other.url, events=["session.opened"], allow_private=True
        )
        other.secret = issued.secret
        receiver.default = "hang"
        stuck = [services.webhook_test_send(actor=admin, endpoint=destination) for _ in range(3)]
        fine = services.webhook_test_send(actor=admin, endpoint=issued.endpoint)
        outcomes = [deliver(row.pk) for row in stuck]
        assert outcomes == ["failed", "destination backing off", "destination backing off"]
        assert len(receiver.received) == 1
        assert [_row(r.pk).attempts for r in stuck] == [1, 0, 0]
        assert deliver(fine.pk) == "delivered" and other.delivered_ids() == [str(fine.event_id)]
        # The sweep hands out neither the backing-off destination's rows nor delivered ones.
        assert delivery.due_deliveries() == []
        # Later the destination answers again: every event arrives, once each.
        receiver.default = "ok"
        _make_due(*stuck)
        assert sorted(delivery.due_deliveries()) == sorted(r.pk for r in stuck)
        assert [deliver(r.pk) for r in stuck] == ["delivered"] * 3
        assert sorted(receiver.delivered_ids()) == sorted(str(r.event_id) for r in stuck)
    finally:
        other.stop()


def test_the_budget_is_spent_then_given_up_and_redelivery_starts_again(admin, event, receiver):
    receiver.default = "500"
    for _ in (1, 2):
        assert deliver(event.pk) == "failed"
        _make_due(event)
    assert deliver(event.pk) == "given up"  # WEBHOOK_MAX_ATTEMPTS = 3 here
    row = _row(event.pk)
    assert (row.status, row.attempts, row.last_status_code) == ("given_up", 3, 500)
    assert delivery.due_deliveries() == [] and deliver(event.pk) == "done"

    receiver.default = "ok"
    services.delivery_redeliver(actor=admin, delivery=row)
    assert (_row(event.pk).status, _row(event.pk).attempts) == ("queued", 0)
    assert deliver(event.pk) == "delivered"
    assert receiver.delivered_ids() == [str(event.event_id)]  # the same event id as before


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(settings):
    settings.CAISEY = {**settings.CAISEY, "WEBHOOK_BACKOFF_BASE_S": 10.0, "WEBHOOK_BACKOFF_CAP_S": 3600.0}
    for attempts, ceiling in [(1, 10), (2, 20), (5, 160), (20, 3600)]:
        delays = {backoff(attempts).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def test_a_destination_failing_for_the_configured_time_is_disabled_and_admins_are_told(
    admin, tenant, destination, event, receiver
):
    receiver.default = "500"
    with tenancy.system():
        WebhookEndpoint.objects.filter(pk=destination.pk).update(failing_since=timezone.now() - timedelta(hours=25))
    assert deliver(event.pk) == "failed"
    with tenancy.system():
        hook = WebhookEndpoint.objects.get(pk=destination.pk)
        notice = SecurityEvent.objects.get(kind=SecurityEventKind.WEBHOOK_DISABLED)
    assert not hook.enabled and "every delivery failed" in hook.disabled_reason
    assert notice.tenant_id == tenant.pk and notice.detail["webhook"] == str(destination.pk)
    # Its events are kept, not sent while it is off, and go out once an admin enables it again.
    _make_due(event)
    assert deliver(event.pk) == "destination disabled" and delivery.due_deliveries() == []
    receiver.default = "ok"
    services.webhook_set_enabled(actor=admin, endpoint=hook, enabled=True)
    assert deliver(event.pk) == "delivered"


def test_a_failure_shorter_than_the_limit_does_not_disable(destination, event, receiver):
    receiver.default = "500"
    assert deliver(event.pk) == "failed"
    with tenancy.system():
        assert WebhookEndpoint.objects.get(pk=destination.pk).enabled


def test_the_address_is_checked_again_at_send_time(admin, tenant, monkeypatch):
    """Saved while its name resolved to a public address, the destination now resolves to a private
    one (DNS rebinding): the send is refused and nothing connects."""
    answers = {"now": "1.1.1.1"}

    def fake(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["now"], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    hook = services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url="https://hooks.example.com/x", events=["session.opened"]
    ).endpoint
    answers["now"] = "127.0.0.1"
    row = services.webhook_test_send(actor=admin, endpoint=hook)
    assert deliver(row.pk) == "failed"
    assert "refused" in _row(row.pk).last_error and "loopback" in _row(row.pk).last_error


def test_rotation_signs_with_both_secrets_for_the_overlap(admin, destination, receiver):
    old = receiver.secret
    rotated = services.webhook_rotate_secret(actor=admin, endpoint=destination)
    assert rotated.secret != old
    row = services.webhook_test_send(actor=admin, endpoint=destination)
    assert deliver(row.pk) == "delivered"  # the receiver still holds the old secret
    header = receiver.received[-1].headers["Caisey-Signature"]
    assert header.count("v1=") == 2
    receiver.secret = rotated.secret
    row = services.webhook_test_send(actor=admin, endpoint=destination)
    assert deliver(row.pk) == "delivered" and receiver.received[-1].signature_ok
    # After the overlap only the new secret signs.
    with tenancy.system():
        WebhookEndpoint.objects.filter(pk=destination.pk).update(previous_valid_until=timezone.now())
    row = services.webhook_test_send(actor=admin, endpoint=destination)
    deliver(row.pk)
    assert receiver.received[-1].headers["Caisey-Signature"].count("v1=") == 1


def test_secrets_are_stored_encrypted(destination, receiver):
    with tenancy.system():
        stored = WebhookEndpoint.objects.get(pk=destination.pk).secret_current
    assert receiver.secret not in stored and receiver.secret.startswith("whsec_")


def test_the_event_of_a_real_change_reaches_the_receiver(admin, tenant, destination, receiver):
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    session = factories.support_session(endpoint, opened_by=admin)
    with tenancy.system():
        (row,) = WebhookDelivery.objects.filter(event_type="session.opened")
    assert deliver(row.pk) == "delivered"
    got = receiver.received[-1]
    assert got.signature_ok and got.json["data"]["session"]["id"] == str(session.pk)
