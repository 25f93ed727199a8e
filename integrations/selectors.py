"""Reads for the webhook pages: plain data, in the bound tenant."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet

from integrations.events import CHAT_EVENT_TYPES, EVENT_TYPES
from integrations.models import PENDING_STATUSES, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookFormat

DELIVERIES_PER_PAGE = 50


def _with_counts(rows):
    return rows.annotate(
        pending=Count("deliveries", filter=Q(deliveries__status__in=PENDING_STATUSES)),
        given_up=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.GIVEN_UP)),
    )


def _row(w: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": w.pk,
        "url": w.url,
        "description": w.description,
        "events": w.events,
        "format": w.format,
        "format_label": w.get_format_display(),
        "enabled": w.enabled,
        "allow_private": w.allow_private,
        "failing_since": w.failing_since,
        "disabled_reason": w.disabled_reason,
        "rotating_until": w.previous_valid_until if w.secret_previous else None,
        "pending": w.pending,  # type: ignore[attr-defined]  # annotated by _with_counts
        "given_up": w.given_up,  # type: ignore[attr-defined]
        "created_at": w.created_at,
    }


def webhook_list() -> list[dict[str, Any]]:
    """The bound tenant's destinations with their delivery counts (the console's list, the API's)."""
    return [_row(w) for w in _with_counts(WebhookEndpoint.objects.all()).order_by("created_at", "pk")]


def webhook_data(*, webhook_id: Any) -> dict[str, Any]:
    """One destination of the bound tenant, as ``webhook_list`` shows it (DoesNotExist otherwise)."""
    return _row(_with_counts(WebhookEndpoint.objects.filter(pk=webhook_id)).get())


def webhook_form_choices() -> dict[str, Any]:
    return {
        "event_types": list(EVENT_TYPES.items()),
        "chat_event_types": CHAT_EVENT_TYPES,
        "formats": WebhookFormat.choices,
    }


def delivery_rows(*, endpoint: WebhookEndpoint, status: str = "") -> QuerySet[WebhookDelivery]:
    """A destination's deliveries, newest first, optionally in one state (the log; the payload left out)."""
    qs = WebhookDelivery.objects.filter(endpoint=endpoint).only(
        "pk",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "latency_ms",
        "created_at",
        "delivered_at",
    )
    if status in DeliveryStatus.values:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def delivery_log(*, endpoint: WebhookEndpoint, page: int | str = 1, status: str = "") -> Page:
    return Paginator(delivery_rows(endpoint=endpoint, status=status), DELIVERIES_PER_PAGE).get_page(page)
