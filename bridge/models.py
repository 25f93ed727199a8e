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
