"""What a collector receives: RFC 5424 syslog messages (octet-counted over TCP, RFC 6587) and
JSON lines. Hand-written because the standard library's SysLogHandler speaks RFC 3164 only and
the formatting is a few lines of the RFC; the escaping rules are tested (tests/audit/test_formats.py).

Every record carries ``event_id`` (stable across resends: a collector drops duplicates by it)
and ``seq`` (the tenant's stream order; a collector can spot a hole by it, though a tenant's seqs
are not consecutive: the journal's order is shared by all tenants)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

SCHEMA = "caisey.audit.v1"
APP_NAME = "caisey"
# The SD-ID of Caisey's structured data: name@<IANA private enterprise number>. 32473 is the
# number RFC 5612 reserves for documentation and examples; set CAISEY_AUDIT_SD_ID to an
# organisation's own when its collectors key on it.
DEFAULT_SD_ID = "caisey@32473"
# Facility 13, "log audit" (RFC 5424 table 1). Severities: informational for the transcript,
# notice for security events.
FACILITY = 13
SEVERITY = {"transcript": 6, "security": 5, "test": 6}

_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def record_json(record: Any, *, tenant_slug: str = "") -> dict[str, Any]:
    """A journal row (``audit.models.AuditRecord`` or anything with its fields) as the JSON object
    both formats carry."""
    return {
        "schema": SCHEMA,
        "event_id": str(record.event_id),
        "seq": record.seq,
        "tenant": str(record.tenant_id),
        "tenant_slug": tenant_slug,
        "category": record.category,
        "kind": record.kind,
        "at": _timestamp(record.at),
        "actor": record.actor,
        "session": str(record.session_id) if record.session_id else None,
        "endpoint": str(record.endpoint_id) if record.endpoint_id else None,
        "data": record.data,
    }


def json_line(obj: dict[str, Any]) -> bytes:
    """One object, one line: no raw newline can occur inside (json.dumps escapes it)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _header_field(value: str, *, limit: int) -> str:
    """A header field (HOSTNAME, APP-NAME, MSGID): printable US-ASCII, no space, bounded; "-" when empty."""
    cleaned = _NOT_PRINTUSASCII.sub("_", value)[:limit]
    return cleaned or "-"


def sd_escape(value: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped with a backslash (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def hostname() -> str:
    return settings.CAISEY.get("AUDIT_HOSTNAME") or socket.gethostname()


def syslog_message(obj: dict[str, Any], *, host: str | None = None, sd_id: str | None = None) -> bytes:
    """One RFC 5424 message for a record's JSON (``record_json``):
    ``<PRI>1 TIMESTAMP HOSTNAME caisey - MSGID [SD] MSG``, MSG the JSON object. The MSG carries no
    BOM: collectors that parse the JSON (rsyslog's mmjsonparse, Logstash, Wazuh) read it from the
    first brace, and RFC 5424 allows MSG-ANY."""
    pri = FACILITY * 8 + SEVERITY.get(obj["category"], 6)
    params = [
        ("tenant", obj["tenant"]),
        ("session", obj["session"] or ""),
        ("endpoint", obj["endpoint"] or ""),
        ("actor", obj["actor"]),
        ("eventId", obj["event_id"]),
        ("seq", "" if obj["seq"] is None else str(obj["seq"])),
        ("category", obj["category"]),
    ]
    sd = "[{}{}]".format(
        _header_field(sd_id or settings.CAISEY.get("AUDIT_SD_ID") or DEFAULT_SD_ID, limit=32),
        "".join(f' {name}="{sd_escape(value)}"' for name, value in params if value),
    )
    header = " ".join(
        [
            f"<{pri}>1",
            obj["at"],
            _header_field(host or hostname(), limit=255),
            APP_NAME,
            "-",
            _header_field(obj["kind"], limit=32),
            sd,
        ]
    )
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    message = f"{header} {body}".encode()
    limit = int(settings.CAISEY.get("AUDIT_SYSLOG_MAX_BYTES", 8192))
    if len(message) > limit:
        # Collectors cut longer messages (RFC 5425: receivers should take 8192 octets; rsyslog's
        # default maxMessageSize is 8k), which would leave the JSON unreadable. An action's output
        # chunk runs to hundreds of KiB: its data is replaced by its size and SHA-256, the event
        # itself (who, what, when, where) still goes, and the full entry stays in Caisey's record.
        data = json.dumps(obj["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        slim = {
            **obj,
            "data": {
                "truncated": True,
                "bytes": len(data.encode()),
                "sha256": hashlib.sha256(data.encode()).hexdigest(),
            },
        }
        body = json.dumps(slim, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        message = f"{header} {body}".encode()
    return message


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 section 3.4.1 framing: MSG-LEN SP SYSLOG-MSG (the length in octets)."""
    return str(len(message)).encode() + b" " + message
