"""The console's webhook pages: tenant admins only; the secret is shown once; the delivery log and
redelivery."""

from __future__ import annotations

import pytest
from django.urls import reverse

from caisey import tenancy
from endpoints.models import Role, SecurityEvent, SecurityEventKind
from integrations.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tests import factories


def _hooks():
    with tenancy.system():
        return list(WebhookEndpoint.objects.all())


@pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.VIEWER])
def test_only_admins_reach_the_pages(client, tenant, role):
    hook, delivery = factories.webhook(tenant)
    client.force_login(factories.member(tenant, role=role).user)
    urls_get = [reverse("integrations:webhooks"), reverse("integrations:webhook_detail", args=[hook.pk])]
    for url in urls_get:
        assert client.get(url).status_code == 403
    posts = [
        reverse("integrations:webhook_create"),
        reverse("integrations:webhook_rotate", args=[hook.pk]),
        reverse("integrations:webhook_disable", args=[hook.pk]),
        reverse("integrations:webhook_test", args=[hook.pk]),
        reverse("integrations:webhook_delete", args=[hook.pk]),
        reverse("integrations:delivery_redeliver", args=[hook.pk, delivery.pk]),
    ]
    for url in posts:
        assert client.post(url, {"url": "https://1.1.1.1/x", "events": ["session.opened"]}).status_code == 403
    assert len(_hooks()) == 1 and _hooks()[0].enabled


def test_an_admin_creates_a_destination_and_sees_its_secret_once(client, tenant, admin):
    client.force_login(admin)
    response = client.post(
        reverse("integrations:webhook_create"),
        {
            "url": "https://1.1.1.1/psa",
            "description": "PSA",
            "events": ["session.opened", "prompt.issued"],
            "format": "json",
        },
    )
    assert response.status_code == 302
    (hook,) = _hooks()
    assert (hook.url, hook.events, hook.format, hook.enabled) == (
        "https://1.1.1.1/psa",
        ["prompt.issued", "session.opened"],
        "json",
        True,
    )
    page = client.get(reverse("integrations:webhooks"))
    secret = page.context["issued"]["secret"]
    assert secret.startswith("whsec_") and secret in page.content.decode()
    assert page["Cache-Control"] == "no-store"
    assert secret not in client.get(reverse("integrations:webhooks")).content.decode()  # once
    with tenancy.system():
        event = SecurityEvent.objects.get(kind=SecurityEventKind.WEBHOOK_CHANGED)
    assert secret not in str(event.detail) and event.detail["change"] == "created"


def test_a_private_destination_is_refused_unless_allowed(client, tenant, admin):
    client.force_login(admin)
    response = client.post(
        reverse("integrations:webhook_create"),
        {"url": "http://10.0.0.8/hook", "events": ["session.opened"], "format": "json"},
        follow=True,
    )
    assert "private address" in response.content.decode()
    assert _hooks() == []
    client.post(
        reverse("integrations:webhook_create"),
        {"url": "http://10.0.0.8/hook", "events": ["session.opened"], "format": "json", "allow_private": "on"},
    )
    assert [h.allow_private for h in _hooks()] == [True]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"events": ["no.such.event"]}, "unknown event type"),
        ({"events": []}, "at least one event"),
        ({"format": "slack", "events": ["session.opened"]}, "chat formats carry only"),
        ({"format": "fax"}, "format must be one of"),
        ({"url": "ftp://1.1.1.1/x"}, "https://"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_changes_nothing(client, tenant, admin, fields, why):
    client.force_login(admin)
    data = {"url": "https://1.1.1.1/x", "events": ["session.opened"], "format": "json", **fields}
    response = client.post(reverse("integrations:webhook_create"), data, follow=True)
    assert why in response.content.decode()
    assert _hooks() == []


def test_the_delivery_log_shows_each_delivery_and_redelivers(client, tenant, admin):
    hook, delivery = factories.webhook(tenant)
    with tenancy.system():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.GIVEN_UP,
            attempts=12,
            last_status_code=503,
            last_error="answered HTTP 503",
            latency_ms=42,
        )
    client.force_login(admin)
    page = client.get(reverse("integrations:webhook_detail", args=[hook.pk])).content.decode()
    assert f'data-delivery="{delivery.pk}" data-status="given_up"' in page
    for shown in ("Given up", "503", "answered HTTP 503", "42 ms", "webhook.test", str(delivery.event_id)):
        assert shown in page
    client.post(reverse("integrations:delivery_redeliver", args=[hook.pk, delivery.pk]))
    with tenancy.system():
        row = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (row.status, row.attempts, row.event_id) == ("queued", 0, delivery.event_id)


def test_rotate_disable_enable_and_test_send(client, tenant, admin):
    hook, _ = factories.webhook(tenant)
    client.force_login(admin)
    client.post(reverse("integrations:webhook_rotate", args=[hook.pk]))
    secret = client.get(reverse("integrations:webhooks")).context["issued"]["secret"]
    with tenancy.system():
        hook.refresh_from_db()
    assert secret.startswith("whsec_") and hook.secret_previous and hook.previous_valid_until
    client.post(reverse("integrations:webhook_disable", args=[hook.pk]))
    assert not _hooks()[0].enabled
    client.post(reverse("integrations:webhook_enable", args=[hook.pk]))
    assert _hooks()[0].enabled
    client.post(reverse("integrations:webhook_test", args=[hook.pk]))
    with tenancy.system():
        assert WebhookDelivery.objects.filter(endpoint=hook, event_type="webhook.test").count() == 2
    client.post(reverse("integrations:webhook_delete", args=[hook.pk]))
    assert _hooks() == []


def test_slack_and_teams_bodies(tenant, admin):
    from integrations import formats
    from integrations.events import envelope

    payload = envelope(
        event_id="e1",
        event_type="prompt.issued",
        tenant_id=tenant.pk,
        data={
            "session": {"id": "s1", "reason": "ticket <7>"},
            "endpoint": {"id": "x", "hostname": "acct-pc"},
            "detail": {"title": "Restart?", "deadline": "soon"},
        },
    )
    slack = formats.slack(payload)
    assert slack["text"].startswith("Approval waiting: acct-pc") and slack["blocks"][0]["type"] == "header"
    assert "ticket &lt;7&gt;" in str(slack["blocks"])  # Slack's mrkdwn escaping
    teams = formats.teams(payload)
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and "acct-pc" in str(card["content"]["body"])
