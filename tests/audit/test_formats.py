"""The audit stream's wire formats: RFC 5424 syslog messages, RFC 6587 octet counting, JSON lines."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from audit import formats

# RFC 5424 section 6, the header and structured data (ABNF transcribed as a regular expression).
SD_NAME = r"[!#-\[\^-~]{1,32}"  # PRINTUSASCII except '=', SP, ']', '"'
PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
SD_ELEMENT = rf'\[{SD_NAME}(?: {SD_NAME}="{PARAM_VALUE}")*\]'
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 "
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    rf"(?P<sd>-|(?:{SD_ELEMENT})+)"
    r"(?: (?P<msg>.*))?$",
    re.DOTALL,
)


def _record(**overrides):
    fields = {
        "event_id": uuid.UUID("3b0d7c52-8f5c-4d5e-9b7e-2f1d2c3b4a59"),
        "seq": 42,
        "tenant_id": uuid.UUID("11111111-2222-3333-4444-555555555555"),
        "category": "transcript",
        "kind": "action.queued",
        "at": datetime(2026, 12, 5, 6, 1, 2, 345678, tzinfo=UTC),
        "actor": "user:alice",
        "session_id": uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        "endpoint_id": uuid.UUID("99999999-8888-7777-6666-555555555555"),
        "data": {"kind": "dns_resolve", "params": {"name": "erp.local"}},
    }
    return SimpleNamespace(**(fields | overrides))


def test_a_syslog_message_has_the_rfc_5424_shape():
    obj = formats.record_json(_record(), tenant_slug="acme")
    line = formats.syslog_message(obj, host="caisey-1.example").decode()
    match = RFC5424.match(line)
    assert match, line
    assert match["pri"] == str(13 * 8 + 6)  # facility log audit, informational
    assert match["ts"] == "2026-12-05T06:01:02.345678Z"
    assert (match["host"], match["app"], match["procid"], match["msgid"]) == (
        "caisey-1.example",
        "caisey",
        "-",
        "action.queued",
    )
    sd = match["sd"]
    assert sd.startswith("[caisey@32473 ")
    for name, value in (
        ("tenant", "11111111-2222-3333-4444-555555555555"),
        ("session", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        ("endpoint", "99999999-8888-7777-6666-555555555555"),
        ("actor", "user:alice"),
        ("eventId", "3b0d7c52-8f5c-4d5e-9b7e-2f1d2c3b4a59"),
        ("seq", "42"),
    ):
        assert f' {name}="{value}"' in sd
    body = json.loads(match["msg"])
    assert body == obj
    assert body["event_id"] == "3b0d7c52-8f5c-4d5e-9b7e-2f1d2c3b4a59" and body["tenant_slug"] == "acme"


def test_security_events_are_notices_and_absent_parameters_are_left_out():
    obj = formats.record_json(_record(category="security", kind="login_failed", session_id=None, endpoint_id=None))
    line = formats.syslog_message(obj, host="h").decode()
    match = RFC5424.match(line)
    assert match and match["pri"] == str(13 * 8 + 5)
    assert "session=" not in match["sd"] and "endpoint=" not in match["sd"]


def test_sd_param_values_escape_quote_backslash_and_bracket():
    assert formats.sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    nasty = 'user:"evil\\] [x@1 injected="yes"]'
    obj = formats.record_json(_record(actor=nasty))
    line = formats.syslog_message(obj, host="h").decode()
    match = RFC5424.match(line)
    assert match, line
    # One SD element only: the actor's brackets and quotes did not end it or open another.
    elements = re.findall(SD_ELEMENT, match["sd"])
    assert len(elements) == 1
    value = re.search(rf' actor="({PARAM_VALUE})"', match["sd"])[1]
    assert re.sub(r'\\(["\\\]])', r"\1", value) == nasty


def test_header_fields_are_printable_ascii_without_spaces():
    obj = formats.record_json(_record(kind="weird kind\twith spaces"))
    line = formats.syslog_message(obj, host="host with space").decode()
    match = RFC5424.match(line)
    assert match and match["host"] == "host_with_space" and match["msgid"] == "weird_kind_with_spaces"


def test_the_message_stays_on_one_line_and_non_ascii_survives():
    obj = formats.record_json(_record(data={"note": "line one\nline two", "name": "Müller ✓"}))
    message = formats.syslog_message(obj, host="h")
    assert b"\n" not in message
    assert json.loads(RFC5424.match(message.decode())["msg"])["data"]["name"] == "Müller ✓"


def test_octet_counting_counts_bytes_not_characters():
    message = formats.syslog_message(formats.record_json(_record(actor="Zoë")), host="h")
    framed = formats.octet_counted(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(message) == len(rest) and rest == message
    assert len(message) != len(message.decode())  # the ë is two octets


def test_json_lines_are_one_object_per_line():
    objs = [formats.record_json(_record(seq=n, data={"text": "a\nb"})) for n in (1, 2)]
    body = b"".join(formats.json_line(o) for o in objs)
    lines = body.decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert body.endswith(b"\n")


def test_a_record_too_long_for_a_syslog_message_goes_with_its_datas_size_and_hash(settings):
    import hashlib

    output = "x" * 100_000
    obj = formats.record_json(_record(kind="action.output", data={"stream": "stdout", "data": output}))
    message = formats.syslog_message(obj, host="h")
    assert len(message) <= settings.CAISEY["AUDIT_SYSLOG_MAX_BYTES"]
    body = json.loads(RFC5424.match(message.decode())["msg"])
    full = json.dumps(obj["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert body["data"] == {"truncated": True, "bytes": len(full), "sha256": hashlib.sha256(full.encode()).hexdigest()}
    assert (body["event_id"], body["kind"], body["actor"]) == (obj["event_id"], "action.output", obj["actor"])
    # JSON lines carry the whole record.
    assert json.loads(formats.json_line(obj))["data"]["data"] == output
