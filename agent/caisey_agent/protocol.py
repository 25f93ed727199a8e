"""The agent <-> bridge wire protocol: the one definition both sides import.

Every frame is a JSON envelope ``{"type", "id", "ts", "body"}``. ``body`` is
one of the dataclasses below, chosen by ``type``. Decoding validates the
envelope and the body's fields and types; anything else is a ProtocolError
with a stable ``code`` the receiver reports in an error frame.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 * 1024

# Close codes the bridge uses; the agent reacts to them (4403: stop retrying).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_REVOKED = 4403
CLOSE_RATE_LIMITED = 4429
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_REPLACED = 4409


class ProtocolError(Exception):
    """A frame that cannot be accepted. ``code`` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


# --- bodies: agent -> server -------------------------------------------------


@dataclass
class PromptReport:
    """One prompt as the runtime holds it (sent on hello and every heartbeat)."""

    prompt_id: str
    state: str
    decided_at: float | None = None


@dataclass
class Hello:
    TYPE: ClassVar[str] = "hello"
    endpoint_id: str
    credential: str
    agent_version: str
    protocol: int = PROTOCOL_VERSION
    machine: dict[str, Any] = field(default_factory=dict)
    mode: str = "lazy"
    prompts: list[PromptReport] = field(default_factory=list)


@dataclass
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    interval: float
    mode: str = "lazy"
    metrics: dict[str, Any] = field(default_factory=dict)
    prompts: list[PromptReport] = field(default_factory=list)


@dataclass
class ActionOutput:
    TYPE: ClassVar[str] = "action.output"
    action_id: str
    seq: int
    stream: str
    data: str


@dataclass
class ActionResult:
    TYPE: ClassVar[str] = "action.result"
    action_id: str
    status: str
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class PromptUpdate:
    TYPE: ClassVar[str] = "prompt.update"
    prompt_id: str
    state: str
    decided_at: float | None = None
    decided_by: str = ""


# --- bodies: server -> agent -------------------------------------------------


@dataclass
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    endpoint_id: str
    mode: str
    heartbeat_interval: float
    server_time: float


@dataclass
class ActionRun:
    TYPE: ClassVar[str] = "action.run"
    action_id: str
    kind: str
    category: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0
    output_limit: int = 1024 * 1024
    requested_by: str = ""


@dataclass
class ActionCancel:
    TYPE: ClassVar[str] = "action.cancel"
    action_id: str


@dataclass
class PromptShow:
    TYPE: ClassVar[str] = "prompt.show"
    prompt_id: str
    title: str
    detail: str
    requested_by: str
    organisation: str
    deadline: float


@dataclass
class PromptWithdraw:
    TYPE: ClassVar[str] = "prompt.withdraw"
    prompt_id: str
    reason: str = ""


@dataclass
class ModeSet:
    TYPE: ClassVar[str] = "mode.set"
    mode: str
    heartbeat_interval: float


# --- bodies: both directions -------------------------------------------------


@dataclass
class Ack:
    TYPE: ClassVar[str] = "ack"
    ref: str
    duplicate: bool = False


@dataclass
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    detail: str
    ref: str = ""


AGENT_TO_SERVER: dict[str, type] = {
    cls.TYPE: cls for cls in (Hello, Heartbeat, ActionOutput, ActionResult, PromptUpdate, Ack)
}
SERVER_TO_AGENT: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Welcome, ActionRun, ActionCancel, PromptShow, PromptWithdraw, ModeSet, Ack, Error)
}


@dataclass
class Envelope:
    type: str
    id: str
    ts: float
    body: Any


class _RawEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    id: str
    ts: float
    body: dict[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


def envelope(body: Any, *, id: str | None = None, ts: float | None = None) -> Envelope:
    return Envelope(type=body.TYPE, id=id or new_id(), ts=ts if ts is not None else time.time(), body=body)


def encode(env: Envelope) -> str:
    return msgspec.json.encode(
        {"type": env.type, "id": env.id, "ts": env.ts, "body": msgspec.to_builtins(env.body)}
    ).decode()


def decode(raw: str | bytes, *, accept: dict[str, type], max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """Parse and validate one frame against the message types ``accept`` allows."""
    if len(raw) > max_bytes:
        raise ProtocolError("oversized", f"frame of {len(raw)} bytes exceeds {max_bytes}")
    try:
        env = msgspec.json.decode(raw, type=_RawEnvelope)
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed", str(exc)) from None
    if not env.id or len(env.id) > 64:
        raise ProtocolError("malformed", "envelope id must be 1-64 characters")
    body_type = accept.get(env.type)
    if body_type is None:
        raise ProtocolError("unknown_type", f"unknown message type {env.type!r}")
    try:
        body = msgspec.convert(env.body, type=body_type)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid_body", f"{env.type}: {exc}") from None
    return Envelope(type=env.type, id=env.id, ts=env.ts, body=body)


def to_dict(body: Any) -> dict[str, Any]:
    return msgspec.to_builtins(body)


def from_dict(body_type: type, data: dict[str, Any]) -> Any:
    return msgspec.convert(data, type=body_type)
