"""The audit stream: a journal of every audited event (transcript entries, security events) per
tenant, and the sinks (collectors) each tenant streams it to, each with its own cursor.

Why a journal with a commit-ordered ``seq`` rather than a cursor over the events' own ids (the
classic gap): an auto-increment id is assigned when the row is inserted, not when its
transaction commits, so id 11 may commit before id 10; a reader that saw 11 and moved its
cursor to "id > 11" never sends 10. A settle time ("only read rows older than N seconds") only
narrows the window: a transaction held open longer than N (a slow bulk run, a stalled worker)
still slips under the cursor. Instead every journal row is written with ``seq`` empty in the
transaction of its event (``audit.journal.journal_write``), and one sequencer at a time
(``audit.journal.journal_sequence``, serialised by the lock on ``AuditSequence``'s single row)
stamps the rows already committed with the next numbers, in one transaction that commits
before the lock is released. So a row gets a ``seq`` only once it is visible, and any reader
that sees seq N also sees every seq below N: "seq > cursor" has no gap, whatever the order of
commits. The cost: records reach a sink one sequencing pass after their commit (the delivery
task sequences first, so no extra delay beyond the sweep period).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from caisey.tenancy import TenantScopedManager
from endpoints.models import Tenant


class AuditCategory(models.TextChoices):
    TRANSCRIPT = "transcript", "Transcript entry"
    SECURITY = "security", "Security event"


class AuditRecord(models.Model):
    """One audited event as the stream sends it; written in the event's transaction, never
    changed afterwards except for ``seq``, stamped once after commit."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField(null=True, blank=True, unique=True, help_text="Commit order; empty until stamped.")
    event_id = models.UUIDField(unique=True, help_text="Stable across resends: collectors drop duplicates by it.")
    category = models.CharField(max_length=16, choices=AuditCategory.choices)
    kind = models.CharField(max_length=40)
    at = models.DateTimeField(help_text="When the event happened.")
    journaled_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    session_id = models.UUIDField(null=True, blank=True)
    endpoint_id = models.UUIDField(null=True, blank=True)
    data = models.JSONField(default=dict)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "seq"], name="audit_record_tenant_seq"),
            # What the sequencer looks for: the rows not stamped yet, oldest first.
            models.Index(fields=["id"], condition=Q(seq__isnull=True), name="audit_record_unsequenced"),
        ]


class AuditSequence(models.Model):
    """The sequencer's single row (pk 1): the last ``seq`` handed out, and the lock that
    serialises sequencing."""

    last_seq = models.BigIntegerField(default=0)


class SinkKind(models.TextChoices):
    SYSLOG_TCP = "syslog_tcp", "Syslog over TCP (RFC 5424, octet-counted; TLS optional)"
    JSON_HTTPS = "json_https", "JSON lines over HTTPS POST"


class AuditSink(models.Model):
    """A collector a tenant streams its audit journal to. ``cursor`` is the highest ``seq`` the
    collector accepted; delivery resumes after it (at-least-once: a batch sent but not
    acknowledged is sent again, with the same event ids)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=SinkKind.choices)
    host = models.CharField(max_length=253, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    tls = models.BooleanField(default=True, help_text="Syslog: TLS (RFC 5425) with certificate verification.")
    ca_pem = models.TextField(blank=True, help_text="Extra CA certificates (PEM) to trust, besides the system's.")
    allow_private = models.BooleanField(
        default=False, help_text="A tenant admin allowed loopback, link-local and private addresses."
    )
    enabled = models.BooleanField(default=True)
    cursor = models.BigIntegerField(default=0)
    sent_total = models.BigIntegerField(default=0)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # The delivery lease (audit/delivery.py): who is sending this sink's next batch, until when.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        ordering = ["name", "pk"]

    @property
    def destination(self) -> str:
        if self.kind == SinkKind.JSON_HTTPS:
            return self.url
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"
