"""Webhook destinations: the only write path (tenant admins only). Secrets are returned to the
caller once, on creation and rotation (the console shows them on the next page only), and never
logged."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from caisey import secrets, tenancy
from caisey.actors import Actor, Party
from caisey.errors import Forbidden, Rejected
from endpoints.access import require_member
from endpoints.models import Membership, Role, SecurityEventKind
from endpoints.security_log import security_event_record
from integrations import ssrf
from integrations.events import CHAT_EVENT_TYPES, EVENT_TYPES, TEST_EVENT, envelope
from integrations.models import PENDING_STATUSES, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookFormat
from integrations.secretbox import seal
from integrations.tasks import deliveries_enqueue

MAX_DESTINATIONS = 20
# How long the previous secret keeps signing after a rotation (receivers switch within it).
ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class IssuedSecret:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def require_tenant_admin(actor: Actor, tenant_id) -> Membership:
    membership = require_member(actor, tenant_id)
    if membership.role != Role.ADMIN:
        raise Forbidden("only the tenant's admins manage webhooks")
    return membership


def _new_secret() -> str:
    return secrets.new_secret("whsec_")


def _clean(*, url: str, description: str, events: list[str], fmt: str, allow_private: bool) -> dict:
    url = (url or "").strip()
    if len(url) > 2000:
        raise Rejected("the destination URL is at most 2000 characters")
    if fmt not in WebhookFormat.values:
        raise Rejected(f"format must be one of {', '.join(WebhookFormat.values)}")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise Rejected(f"unknown event type(s): {', '.join(unknown)}")
    if not events:
        raise Rejected("choose at least one event")
    if fmt != WebhookFormat.JSON and set(events) - set(CHAT_EVENT_TYPES):
        raise Rejected(f"chat formats carry only {', '.join(CHAT_EVENT_TYPES)}")
    description = (description or "").strip()
    if len(description) > 200:
        raise Rejected("the description is at most 200 characters")
    ssrf.resolve(url, allow_private=allow_private)  # raises Rejected saying why
    return {
        "url": url,
        "description": description,
        "events": sorted(set(events)),
        "format": fmt,
        "allow_private": allow_private,
    }


def webhook_create(
    *,
    actor: Actor,
    tenant_id: uuid.UUID,
    url: str,
    events: list[str],
    description: str = "",
    fmt: str = WebhookFormat.JSON,
    allow_private: bool = False,
) -> IssuedSecret:
    require_tenant_admin(actor, tenant_id)
    fields = _clean(url=url, description=description, events=events, fmt=fmt, allow_private=allow_private)
    secret = _new_secret()
    with transaction.atomic(), tenancy.bind(tenant_id):
        if WebhookEndpoint.objects.count() >= MAX_DESTINATIONS:
            raise Rejected(f"a tenant has at most {MAX_DESTINATIONS} webhook destinations")
        endpoint = WebhookEndpoint.objects.create(
            tenant_id=tenant_id,
            secret_current=seal(secret),
            created_by=None if isinstance(actor, Party) else actor,
            **fields,
        )
        _changed(actor, endpoint, "created")
    return IssuedSecret(endpoint=endpoint, secret=secret)


def webhook_update(
    *,
    actor: Actor,
    endpoint: WebhookEndpoint,
    url: str,
    events: list[str],
    description: str,
    fmt: str,
    allow_private: bool,
) -> WebhookEndpoint:
    require_tenant_admin(actor, endpoint.tenant_id)
    fields = _clean(url=url, description=description, events=events, fmt=fmt, allow_private=allow_private)
    with transaction.atomic(), tenancy.bind(endpoint.tenant_id):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
        endpoint.refresh_from_db()
        _changed(actor, endpoint, "updated")
    return endpoint


def webhook_rotate_secret(*, actor: Actor, endpoint: WebhookEndpoint) -> IssuedSecret:
    """A new current secret; the old one keeps signing (a second ``v1``) for ROTATION_OVERLAP."""
    require_tenant_admin(actor, endpoint.tenant_id)
    secret = _new_secret()
    with transaction.atomic(), tenancy.bind(endpoint.tenant_id):
        current = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            secret_current=seal(secret),
            secret_previous=current.secret_current,
            previous_valid_until=timezone.now() + ROTATION_OVERLAP,
        )
        endpoint.refresh_from_db()
        _changed(actor, endpoint, "secret rotated")
    return IssuedSecret(endpoint=endpoint, secret=secret)


def webhook_set_enabled(*, actor: Actor, endpoint: WebhookEndpoint, enabled: bool) -> None:
    """Enabling again clears the failure record: its queued deliveries go out at once."""
    require_tenant_admin(actor, endpoint.tenant_id)
    with transaction.atomic(), tenancy.bind(endpoint.tenant_id):
        if enabled:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                enabled=True, disabled_reason="", failing_since=None, retry_after=None
            )
            due = list(
                WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, status__in=PENDING_STATUSES).values_list(
                    "pk", flat=True
                )[:500]
            )
            WebhookDelivery.objects.filter(pk__in=due).update(next_attempt_at=timezone.now())
            transaction.on_commit(lambda: deliveries_enqueue(due))
        else:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                enabled=False, disabled_reason="turned off by an admin"
            )
        endpoint.refresh_from_db()
        _changed(actor, endpoint, "enabled" if enabled else "disabled")


def webhook_delete(*, actor: Actor, endpoint: WebhookEndpoint) -> None:
    require_tenant_admin(actor, endpoint.tenant_id)
    with transaction.atomic(), tenancy.bind(endpoint.tenant_id):
        _changed(actor, endpoint, "deleted")
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def webhook_test_send(*, actor: Actor, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A ``webhook.test`` event to this destination only (whatever its filter), logged like any."""
    require_tenant_admin(actor, endpoint.tenant_id)
    event_id = uuid.uuid4()
    with transaction.atomic(), tenancy.bind(endpoint.tenant_id):
        delivery = WebhookDelivery.objects.create(
            tenant_id=endpoint.tenant_id,
            endpoint=endpoint,
            event_id=event_id,
            event_type=TEST_EVENT,
            payload=envelope(
                event_id=event_id,
                event_type=TEST_EVENT,
                tenant_id=endpoint.tenant_id,
                data={"webhook": str(endpoint.pk), "requested_by": getattr(actor, "username", str(actor))},
            ),
        )
        transaction.on_commit(lambda: deliveries_enqueue([delivery.pk]))
    return delivery


def delivery_redeliver(*, actor: Actor, delivery: WebhookDelivery) -> None:
    """Send again, now, from a fresh budget, with the same event id (receivers drop a duplicate by
    it). An admin asking is a reason to try the destination before its backoff ends."""
    require_tenant_admin(actor, delivery.tenant_id)
    with transaction.atomic(), tenancy.bind(delivery.tenant_id):
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(retry_after=None)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.QUEUED, attempts=0, next_attempt_at=timezone.now(), last_error=""
        )
        transaction.on_commit(lambda: deliveries_enqueue([delivery.pk]))


def destination_name(endpoint: WebhookEndpoint) -> str:
    """How logs name a destination: its description or its host, never its whole URL (Slack's and
    Teams' webhook URLs carry their secret in the path)."""
    return f"webhook {endpoint.description or urlsplit(endpoint.url).hostname}"[:300]


def _changed(actor: Actor, endpoint: WebhookEndpoint, what: str) -> None:
    # Secrets never go into the log: only which destination and what changed.
    security_event_record(
        tenant_id=endpoint.tenant_id,
        kind=SecurityEventKind.WEBHOOK_CHANGED,
        actor=actor,
        target=destination_name(endpoint),
        detail={"webhook": str(endpoint.pk), "change": what, "events": endpoint.events},
    )
