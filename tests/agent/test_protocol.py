"""The wire protocol both sides import: envelopes, bodies, and the errors a bad frame gets."""

from __future__ import annotations

import json

import pytest

from caisey_agent import protocol as p

# One realistic body per message type. A new message type must add its sample here.
SAMPLES = {
    "hello": p.Hello(
        endpoint_id="6f1c2d4e-0000-4000-8000-000000000001",
        credential="s3cret",
        agent_version="1.2.3",
        machine={"hostname": "pc01", "os": "Linux", "ips": ["10.0.0.5"]},
        mode="active",
        prompts=[p.PromptReport(prompt_id="pr1", state="approved", decided_at=1700000000.5)],
    ),
    "heartbeat": p.Heartbeat(
        interval=10.0,
        mode="active",
        metrics={"cpu": 12.5},
        prompts=[p.PromptReport(prompt_id="pr1", state="delivered")],
    ),
    "action.output": p.ActionOutput(action_id="a1", seq=3, stream="stdout", data="line\n"),
    "action.result": p.ActionResult(
        action_id="a1",
        status="succeeded",
        exit_code=0,
        result={"ok": True, "rows": [1, 2]},
        started_at=1700000000.0,
        finished_at=1700000001.25,
    ),
    "prompt.update": p.PromptUpdate(prompt_id="pr1", state="denied", decided_at=1700000002.0, decided_by="jdoe"),
    "ack": p.Ack(ref="f" * 32, duplicate=True),
    "welcome": p.Welcome(endpoint_id="e1", mode="lazy", heartbeat_interval=60.0, server_time=1700000000.0),
    "action.run": p.ActionRun(
        action_id="a1",
        kind="dns_resolve",
        category="diagnostic",
        params={"name": "erp.local"},
        timeout=30.0,
        output_limit=4096,
        requested_by="tech1",
    ),
    "action.cancel": p.ActionCancel(action_id="a1"),
    "prompt.show": p.PromptShow(
        prompt_id="pr1",
        title="Restart the spooler?",
        detail="Printing is stuck",
        requested_by="Jane at Acme",
        organisation="Acme MSP",
        deadline=1700000300.0,
    ),
    "prompt.withdraw": p.PromptWithdraw(prompt_id="pr1", reason="superseded"),
    "mode.set": p.ModeSet(mode="active", heartbeat_interval=10.0),
    "error": p.Error(code="malformed", detail="bad frame", ref="x1"),
}

ALL_TYPES = {**p.AGENT_TO_SERVER, **p.SERVER_TO_AGENT}


def raw(type_: str = "heartbeat", id_: str = "x1", body=None, **extra) -> str:
    frame = {"type": type_, "id": id_, "ts": 1.0, "body": {"interval": 5} if body is None else body, **extra}
    return json.dumps(frame)


def test_every_message_type_has_a_sample():
    assert set(SAMPLES) == set(ALL_TYPES)
    for type_, body in SAMPLES.items():
        assert body.TYPE == type_ and isinstance(body, ALL_TYPES[type_])


def test_directions():
    assert set(p.AGENT_TO_SERVER) == {"hello", "heartbeat", "action.output", "action.result", "prompt.update", "ack"}
    assert set(p.SERVER_TO_AGENT) == {
        "welcome",
        "action.run",
        "action.cancel",
        "prompt.show",
        "prompt.withdraw",
        "mode.set",
        "ack",
        "error",
    }


@pytest.mark.parametrize("type_", sorted(ALL_TYPES))
def test_round_trip(type_):
    accept = p.AGENT_TO_SERVER if type_ in p.AGENT_TO_SERVER else p.SERVER_TO_AGENT
    env = p.envelope(SAMPLES[type_], id="msg-1", ts=1700000000.125)
    wire = p.encode(env)
    assert json.loads(wire)["type"] == type_  # plain JSON on the wire
    back = p.decode(wire, accept=accept)
    assert back == env
    assert p.decode(wire.encode(), accept=accept) == env  # bytes frames too
    assert p.from_dict(type(SAMPLES[type_]), p.to_dict(SAMPLES[type_])) == SAMPLES[type_]


def test_envelope_defaults():
    first, second = p.envelope(p.Ack(ref="r")), p.envelope(p.Ack(ref="r"))
    assert first.type == "ack" and first.id != second.id and len(first.id) == 32
    assert first.ts > 1.6e9


def test_defaults_fill_optional_body_fields():
    env = p.decode(
        raw("hello", body={"endpoint_id": "e", "credential": "c", "agent_version": "1"}), accept=p.AGENT_TO_SERVER
    )
    assert env.body == p.Hello(endpoint_id="e", credential="c", agent_version="1")
    assert env.body.protocol == p.PROTOCOL_VERSION and env.body.prompts == [] and env.body.mode == "lazy"


# --- rejections -------------------------------------------------------------------------------


def rejected(frame, accept=p.AGENT_TO_SERVER, **kwargs) -> str:
    with pytest.raises(p.ProtocolError) as exc:
        p.decode(frame, accept=accept, **kwargs)
    assert exc.value.detail and str(exc.value).startswith(exc.value.code)
    return exc.value.code


def test_oversized():
    assert rejected("x" * (p.MAX_FRAME_BYTES + 1)) == "oversized"
    frame = raw(body={"interval": 5, "metrics": {"pad": "y" * 200}})
    assert rejected(frame, max_bytes=100) == "oversized"
    assert (
        p.decode(frame, accept=p.AGENT_TO_SERVER, max_bytes=len(frame)).type == "heartbeat"
    )  # the limit itself is fine


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "",
        "[]",
        '"hello"',
        b"\x00\x01binary",
        json.dumps({"type": "heartbeat"}),  # no id, ts, body
        json.dumps({"type": "heartbeat", "id": "x", "ts": 1.0}),  # no body
        json.dumps({"type": "heartbeat", "id": "x", "ts": 1.0, "body": [1]}),  # body not an object
        json.dumps({"type": "heartbeat", "id": "x", "ts": "now", "body": {}}),  # ts not a number
        json.dumps({"type": 5, "id": "x", "ts": 1.0, "body": {}}),
        raw(extra_field=1),  # unknown envelope field
    ],
)
def test_malformed(frame):
    assert rejected(frame) == "malformed"


@pytest.mark.parametrize("id_,ok", [("", False), ("a" * 64, True), ("a" * 65, False), ("1", True)])
def test_envelope_id_length(id_, ok):
    if ok:
        assert p.decode(raw(id_=id_), accept=p.AGENT_TO_SERVER).id == id_
    else:
        assert rejected(raw(id_=id_)) == "malformed"


def test_unknown_type():
    assert rejected(raw("teleport")) == "unknown_type"
    # A valid type for the other direction is unknown to this side.
    assert rejected(raw("action.run", body=p.to_dict(SAMPLES["action.run"]))) == "unknown_type"
    assert rejected(raw("hello", body=p.to_dict(SAMPLES["hello"])), accept=p.SERVER_TO_AGENT) == "unknown_type"


@pytest.mark.parametrize(
    "type_,body",
    [
        ("heartbeat", {"interval": "soon"}),
        ("heartbeat", {}),  # required field missing
        ("hello", {"endpoint_id": "e", "credential": 5, "agent_version": "1"}),
        ("hello", {"endpoint_id": "e", "credential": "c", "agent_version": "1", "prompts": [{"state": "x"}]}),
        ("action.result", {"action_id": 5, "status": "succeeded"}),
        ("action.output", {"action_id": "a", "seq": "three", "stream": "stdout", "data": ""}),
        ("ack", {"ref": None}),
    ],
)
def test_invalid_body(type_, body):
    assert rejected(raw(type_, body=body)) == "invalid_body"


def test_close_codes_are_distinct_application_codes():
    codes = [p.CLOSE_UNAUTHENTICATED, p.CLOSE_REVOKED, p.CLOSE_RATE_LIMITED, p.CLOSE_HELLO_TIMEOUT, p.CLOSE_REPLACED]
    assert len(set(codes)) == len(codes) and all(4000 <= c <= 4999 for c in codes)


# --- the action catalogue ----------------------------------------------------------------------


def valid_value(param: p.ParamSpec):
    if param.choices:
        return param.choices[-1]
    if param.type == "int":
        return param.minimum if param.minimum is not None else 1
    if param.type == "bool":
        return True
    return "x"


@pytest.mark.parametrize("kind", sorted(p.ACTION_KINDS))
def test_every_action_kind_accepts_its_required_parameters_and_fills_defaults(kind):
    spec = p.ACTION_KINDS[kind]
    assert spec.name == kind and spec.category in p.CATEGORIES and spec.title and spec.default_timeout > 0
    required = {param.name: valid_value(param) for param in spec.params if param.required}
    clean = p.validate_params(kind, required)
    for param in spec.params:
        if param.required:
            assert clean[param.name] == required[param.name]
        elif param.default is not None:
            assert clean[param.name] == param.default
        else:
            assert param.name not in clean
    missing = [param.name for param in spec.params if param.required]
    if missing:
        with pytest.raises(p.ProtocolError):
            p.validate_params(kind, {})


def test_validate_params():
    assert p.validate_params("dns_resolve", {"name": "erp.local"}) == {"name": "erp.local", "record_type": "A"}
    assert p.validate_params("tcp_connect", {"host": "db", "port": "5432"})["port"] == 5432
    for kind, params in [
        ("tcp_connect", {"host": "db", "port": 70000}),
        ("tcp_connect", {"host": "db"}),
        ("tcp_connect", {"host": "db", "port": "eighty"}),
        ("dns_resolve", {"name": "x", "record_type": "ANY"}),
        ("dns_resolve", {"name": "x" * 254}),
        ("dns_resolve", {"name": "x", "rm": "-rf"}),
        ("dns_resolve", ["name"]),
    ]:
        with pytest.raises(p.ProtocolError) as exc:
            p.validate_params(kind, params)
        assert exc.value.code == "invalid_params", (kind, params)
    with pytest.raises(p.ProtocolError) as exc:
        p.validate_params("format_disk", {})
    assert exc.value.code == "unknown_action"
