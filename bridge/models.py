"""Transport records: agent connections and the ids of frames already applied."""

from __future__ import annotations

from django.db import models

from caisey.tenancy import TenantScopedManager
from endpoints.models import Endpoint


class AgentConnection(models.Model):
    """One authenticated agent connection; reconnect frequency is counted from these."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="connections")
    connection_id = models.CharField(max_length=32, unique=True)
    remote_ip = models.CharField(max_length=64, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.IntegerField(null=True, blank=True)

    objects = TenantScopedManager(tenant_field="endpoint__tenant")
    all_tenants = models.Manager()

    class Meta:
        indexes = [models.Index(fields=["endpoint", "opened_at"])]


class InboundReceipt(models.Model):
    """An agent frame id already applied: a replayed frame is acknowledged, not applied twice."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=64)
    message_type = models.CharField(max_length=40)
    received_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedManager(tenant_field="endpoint__tenant")
    all_tenants = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "message_id"], name="inbound_once")]
        indexes = [models.Index(fields=["received_at"])]


class OutboxStatus(models.TextChoices):
    QUEUED = "queued", "Queued"  # waiting to be sent, or sent and waiting for the agent's ack
    ACKED = "acked", "Acknowledged"
    FAILED_TO_DELIVER = "failed_to_deliver", "Failed to deliver"
    CANCELLED = "cancelled", "Cancelled"


OUTBOX_TRANSITIONS: dict[str, frozenset[str]] = {
    OutboxStatus.QUEUED: frozenset({OutboxStatus.ACKED, OutboxStatus.FAILED_TO_DELIVER, OutboxStatus.CANCELLED}),
    # A late ack after giving up is still proof of delivery; a resend queues it again.
    OutboxStatus.FAILED_TO_DELIVER: frozenset({OutboxStatus.QUEUED, OutboxStatus.ACKED, OutboxStatus.CANCELLED}),
    OutboxStatus.ACKED: frozenset(),
    OutboxStatus.CANCELLED: frozenset(),
}


class OutboxMessage(models.Model):
    """A server -> agent message, persisted before it is sent and done only when acked.

    ``id`` is the envelope id: every retry goes out under it, so the agent can
    deduplicate. Nothing is deleted to mean "expired": a message that could not
    be delivered ends as failed_to_deliver, with its attempts and last error.
    """

    id = models.CharField(primary_key=True, max_length=32)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="outbox")
    kind = models.CharField(max_length=40)
    body = models.JSONField()
    status = models.CharField(max_length=20, choices=OutboxStatus.choices, default=OutboxStatus.QUEUED)
    # What the message is about, so its owner can be told of delivery or failure.
    ref_type = models.CharField(max_length=40, blank=True)
    ref_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    acked_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    status_changed_by = models.CharField(max_length=200, blank=True)

    objects = TenantScopedManager(tenant_field="endpoint__tenant")
    all_tenants = models.Manager()

    class Meta:
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["endpoint", "status", "created_at"]),
            models.Index(fields=["endpoint", "acked_at"]),
        ]
