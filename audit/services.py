"""Writes of the audit stream's sinks: a tenant admin's (creating, editing, enabling, disabling, deleting,
testing)."""

from __future__ import annotations

import ipaddress
import re
import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from audit import formats, transport
from audit.models import AuditSink, SinkKind
from caisey import tenancy
from caisey.actors import Actor, Party, actor_label
from caisey.errors import Forbidden, Rejected
from endpoints.access import require_member
from endpoints.models import Role, SecurityEventKind, Tenant
from endpoints.security_log import security_event_record

NAME_MAX = 100
CA_PEM_MAX = 64 * 1024
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _require_admin(actor: Actor, tenant_id: uuid.UUID | str) -> None:
    if require_member(actor, tenant_id).role != Role.ADMIN:
        raise Forbidden("only a tenant admin manages the audit stream's sinks")


def _valid_host(host: str) -> str:
    host = host.strip()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise Rejected(f"{host[:80]!r} is not a host name or an IP address")
    return host.rstrip(".").lower()


def _checked_ca(ca_pem: str) -> str:
    ca_pem = ca_pem.strip()
    if not ca_pem:
        return ""
    if len(ca_pem) > CA_PEM_MAX:
        raise Rejected(f"the CA certificates are longer than {CA_PEM_MAX // 1024} KiB")
    try:
        ssl.create_default_context().load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, ValueError, TypeError):  # TypeError: text that is not ASCII (PEM is)
        raise Rejected("the CA certificates are not PEM certificates") from None
    return ca_pem


@dataclass(frozen=True)
class SinkInput:
    name: str
    kind: str
    host: str = ""
    port: int | None = None
    url: str = ""
    tls: bool = True
    ca_pem: str = ""
    allow_private: bool = False


def _checked(data: SinkInput) -> dict:
    name = data.name.strip()
    if not name or len(name) > NAME_MAX:
        raise Rejected(f"a sink needs a name of 1 to {NAME_MAX} characters")
    fields: dict = {"name": name, "kind": data.kind, "ca_pem": _checked_ca(data.ca_pem)}
    fields["allow_private"] = bool(data.allow_private)
    if data.kind == SinkKind.SYSLOG_TCP:
        if data.port is None or not 1 <= data.port <= 65535:
            raise Rejected("a syslog sink needs a port from 1 to 65535")
        fields |= {"host": _valid_host(data.host), "port": data.port, "tls": bool(data.tls), "url": ""}
    elif data.kind == SinkKind.JSON_HTTPS:
        url = data.url.strip()
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise Rejected("the URL is not a valid URL") from None
        if parts.scheme != "https" or not parts.hostname or len(url) > 2000:
            raise Rejected("a JSON-lines sink needs an https:// URL (at most 2000 characters)")
        if parts.username or parts.password:
            raise Rejected("put no user name or password in the URL")
        _valid_host(parts.hostname)
        fields |= {"url": url, "host": "", "port": port, "tls": True}
    else:
        raise Rejected(f"unknown sink kind {data.kind!r}: syslog_tcp or json_https")
    return fields


@transaction.atomic
def audit_sink_create(
    *, actor: Actor, tenant_id: uuid.UUID | str, data: SinkInput, address: str | None = None
) -> AuditSink:
    """A new sink, enabled, starting at the beginning of the tenant's journal (everything retained)."""
    _require_admin(actor, tenant_id)
    fields = _checked(data)
    with tenancy.bind(tenant_id):
        if AuditSink.objects.filter(name=fields["name"]).exists():
            raise Rejected(f"a sink named {fields['name']!r} exists already")
        sink = AuditSink.objects.create(
            tenant=Tenant.objects.get(pk=tenant_id), created_by=None if isinstance(actor, Party) else actor, **fields
        )
        _record_change(sink, actor=actor, address=address, change="created")
        return sink


def sink_input_of(sink: AuditSink) -> SinkInput:
    """A sink's settings as ``audit_sink_update`` takes them (what an edit form or a PATCH starts from)."""
    return SinkInput(
        name=sink.name,
        kind=sink.kind,
        host=sink.host,
        port=sink.port,
        url=sink.url,
        tls=sink.tls,
        ca_pem=sink.ca_pem,
        allow_private=sink.allow_private,
    )


@transaction.atomic
def audit_sink_update(
    *, actor: Actor, tenant_id: uuid.UUID | str, sink_id: int, data: SinkInput, address: str | None = None
) -> AuditSink:
    """Change a sink's name, kind or destination, checked as on creation. Its cursor stays: the
    collector at the new destination receives what comes after what the old one accepted (to send
    the retained journal again, delete the sink and add a new one). The last error is cleared: it
    was the old settings'. A security event names the old and the new destination."""
    _require_admin(actor, tenant_id)
    with tenancy.bind(tenant_id):
        # Found first: another tenant's sink is not found, whatever the input (no telling apart).
        sink = AuditSink.objects.select_for_update().get(pk=sink_id)
        fields = _checked(data)
        if AuditSink.objects.filter(name=fields["name"]).exclude(pk=sink.pk).exists():
            raise Rejected(f"a sink named {fields['name']!r} exists already")
        before = sink.destination
        AuditSink.objects.filter(pk=sink.pk).update(last_error="", last_error_at=None, **fields)
        sink.refresh_from_db()
        _record_change(sink, actor=actor, address=address, change="updated", previous=before)
        return sink


@transaction.atomic
def audit_sink_delete(*, actor: Actor, tenant_id: uuid.UUID | str, sink_id: int, address: str | None = None) -> None:
    """Remove a sink: nothing more goes to it (a batch in flight finishes; its cursor update then
    finds no row). Journal records only it held are deleted at their age (retention)."""
    _require_admin(actor, tenant_id)
    with tenancy.bind(tenant_id):
        sink = AuditSink.objects.select_for_update().get(pk=sink_id)
        _record_change(sink, actor=actor, address=address, change="deleted")
        AuditSink.objects.filter(pk=sink.pk).delete()


def _record_change(
    sink: AuditSink, *, actor: Actor, address: str | None, change: str, previous: str | None = None
) -> None:
    """Where a tenant's audit record goes is a security setting: its changes are security events."""
    security_event_record(
        tenant_id=sink.tenant_id,
        kind=SecurityEventKind.POLICY_CHANGED,
        actor=actor,
        address=address,
        target=f"audit stream sink {sink.name!r}",
        detail={
            "audit_sink": sink.pk,
            "change": change,
            "destination": sink.destination,
            "allow_private": sink.allow_private,
            **({"previous_destination": previous} if previous is not None and previous != sink.destination else {}),
        },
    )


@transaction.atomic
def audit_sink_set_enabled(
    *, actor: Actor, tenant_id: uuid.UUID | str, sink_id: int, enabled: bool, address: str | None = None
) -> AuditSink:
    """Stop or resume a sink; its cursor stays where it is (a resumed sink sends what it missed)."""
    _require_admin(actor, tenant_id)
    with tenancy.bind(tenant_id):
        sink = AuditSink.objects.select_for_update().get(pk=sink_id)
        if sink.enabled != enabled:
            AuditSink.objects.filter(pk=sink.pk).update(enabled=enabled)
            sink.enabled = enabled
            _record_change(sink, actor=actor, address=address, change="enabled" if enabled else "disabled")
        return sink


@dataclass(frozen=True)
class TestOutcome:
    ok: bool
    message: str


def audit_sink_test(*, actor: Actor, tenant_id: uuid.UUID | str, sink_id: int) -> TestOutcome:
    """Send one test record (category ``test``, kind ``audit.test``, a fresh event id) straight to
    the sink, bounded by the send timeout; writes nothing and moves no cursor."""
    _require_admin(actor, tenant_id)
    with tenancy.bind(tenant_id):
        sink = AuditSink.objects.get(pk=sink_id)
        slug = Tenant.objects.filter(pk=tenant_id).values_list("slug", flat=True).first() or ""

    @dataclass
    class _Test:
        event_id: uuid.UUID
        tenant_id: uuid.UUID | str
        seq: None = None
        category: str = "test"
        kind: str = "audit.test"
        at: object = None
        actor: str = ""
        session_id: None = None
        endpoint_id: None = None
        data: dict | None = None

    record = _Test(event_id=uuid.uuid4(), tenant_id=tenant_id, at=timezone.now(), actor=actor_label(actor), data={})
    obj = formats.record_json(record, tenant_slug=slug)
    if sink.kind == SinkKind.JSON_HTTPS:
        payload = formats.json_line(obj)
    else:
        payload = formats.octet_counted(formats.syslog_message(obj))
    try:
        if sink.kind == SinkKind.JSON_HTTPS:
            transport.send_https(transport.destination_of(sink), payload)
        else:
            transport.send_syslog(transport.destination_of(sink), payload)
    except transport.SendError as exc:
        return TestOutcome(False, f"Test record not accepted: {exc}")
    return TestOutcome(True, f"Test record sent (event id {obj['event_id']}).")
