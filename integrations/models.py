"""Webhook destinations of a tenant and their durable delivery outbox (docs/integrations.md)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from caisey.tenancy import TenantScopedManager
from endpoints.models import Tenant


class WebhookFormat(models.TextChoices):
    JSON = "json", "JSON (signed, versioned schema)"
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams incoming webhook"


class WebhookEndpoint(models.Model):
    """One destination of a tenant's events. Secrets are kept encrypted (``integrations.secretbox``):
    they must be readable to sign, so a hash will not do; they are shown once, on creation and
    rotation. During a rotation the previous secret also signs (a second ``v1``) until
    ``previous_valid_until``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # Event types (integrations.events.EVENT_TYPES) this destination receives.
    events = models.JSONField(default=list)
    format = models.CharField(max_length=10, choices=WebhookFormat.choices, default=WebhookFormat.JSON)
    enabled = models.BooleanField(default=True)
    # A tenant admin's explicit permission to target loopback, private or link-local addresses.
    allow_private = models.BooleanField(default=False)
    secret_current = models.TextField()
    secret_previous = models.TextField(blank=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    # Since when every attempt failed (cleared by a success); past WEBHOOK_DISABLE_AFTER_S it is disabled.
    failing_since = models.DateTimeField(null=True, blank=True)
    # A destination that failed (timeout, refused) is not tried again before this: one probe per
    # backoff, so a hanging destination holds at most one worker at a time, not one per event.
    retry_after = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.description or self.url


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    DELIVERED = "delivered", "Delivered"
    # The last attempt failed; another is due at next_attempt_at.
    FAILED = "failed", "Failed, will retry"
    GIVEN_UP = "given_up", "Given up"


PENDING_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.FAILED)


class WebhookDelivery(models.Model):
    """One event for one destination: written in the transaction of the change, sent by a Celery
    task on commit and by the sweep (``integrations.delivery``). ``event_id`` is stable across
    retries and redeliveries: receivers drop duplicates by it (delivery is at least once)."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4)
    event_type = models.CharField(max_length=60)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]
        constraints = [models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once")]
        ordering = ["-created_at", "-id"]
