"""The agent <-> bridge wire protocol: the one definition both sides import.

Every frame is a JSON envelope ``{"type", "id", "ts", "body"}``. ``body`` is
one of the dataclasses below, chosen by ``type``. Decoding validates the
envelope and the body's fields and types; anything else is a ProtocolError
with a stable ``code`` the receiver reports in an error frame.
"""

from __future__ import annotations

import re
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
    # Who decided, as the runtime recorded it: a heartbeat's report may reach the server before
    # the prompt.update that carries the same decision, and the record must name the person either way.
    decided_by: str = ""


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
    # The machine context again (as in hello), now and then (Welcome.context_every): the server keeps
    # the last known state of the machine, not the one it had when it connected. Empty: not this beat.
    machine: dict[str, Any] = field(default_factory=dict)


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
    # How often heartbeats should carry the machine context (seconds; 0: the agent's default).
    context_every: float = 0.0


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
    cls.TYPE: cls for cls in (Welcome, ActionRun, ActionCancel, PromptShow, PromptWithdraw, ModeSet, Ack, Error)
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
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        raise ProtocolError("oversized", f"frame of {size} bytes exceeds {max_bytes}")
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
        body: Any = msgspec.convert(env.body, type=body_type)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid_body", f"{env.type}: {exc}") from None
    return Envelope(type=env.type, id=env.id, ts=env.ts, body=body)


def to_dict(body: Any) -> dict[str, Any]:
    return msgspec.to_builtins(body)


def from_dict(body_type: type, data: dict[str, Any]) -> Any:
    return msgspec.convert(data, type=body_type)


# --- the action catalogue: what an action.run may ask for ----------------------------
#
# Part of the wire contract: the server validates a technician's request against it
# before queueing, and the agent validates again before running (it never trusts the
# server to have done so). ``category`` is what approval policies and the endpoint's
# local policy decide on.

CATEGORY_DIAGNOSTIC = "diagnostic"  # read-only
CATEGORY_COMMAND = "command"  # built-in commands that change something
CATEGORY_SHELL = "shell"  # an arbitrary command line
CATEGORIES = (CATEGORY_DIAGNOSTIC, CATEGORY_COMMAND, CATEGORY_SHELL)

# Final statuses an agent reports in action.result.
RESULT_STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "refused")

# The shell kind's ``shell`` parameter. Empty: the endpoint's default (sh on POSIX, PowerShell
# on Windows); the agent refuses a shell its platform does not have (cmd off Windows, sh on Windows).
SHELL_CHOICES = ("sh", "powershell", "cmd")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # "str", "int", "bool" or "secret" (a password: see SECRET_MASK)
    required: bool = False
    default: Any = None
    help: str = ""
    max_length: int = 1000
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    multiline: bool = False  # newlines (and CR) allowed, e.g. a script; tab always is


@dataclass(frozen=True)
class ActionKind:
    name: str
    title: str
    category: str
    description: str
    params: tuple[ParamSpec, ...] = ()
    default_timeout: float = 60.0
    together: tuple[tuple[str, ...], ...] = ()  # parameters given all or none (a user and its password)


def _p(name: str, type: str = "str", **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, type=type, **kw)


# A "secret" parameter (a password for a login test) is entered by the technician and reaches the agent
# only inside the action.run frame, over the TLS websocket. The server keeps it sealed (encrypted) beside
# the action until the action is final, then wipes it; everywhere it is shown or stored in clear (the
# action's params, the transcript, exports, share pages, API answers, logs) it is this mask. The agent
# never logs it and never puts it in a result.
SECRET_MASK = "•••"


def secret_names(kind_name: str) -> tuple[str, ...]:
    """The names of the kind's secret parameters."""
    kind = ACTION_KINDS.get(kind_name)
    return tuple(spec.name for spec in kind.params if spec.type == "secret") if kind else ()


def masked(kind_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every secret given replaced by :data:`SECRET_MASK` (what is shown and stored)."""
    names = secret_names(kind_name)
    return {k: (SECRET_MASK if k in names and v not in (None, "") else v) for k, v in params.items()}


ACTION_KINDS: dict[str, ActionKind] = {
    k.name: k
    for k in (
        ActionKind(
            "system_summary",
            "System summary",
            CATEGORY_DIAGNOSTIC,
            "OS, uptime, CPU, memory, disks and logged-in users.",
        ),
        ActionKind(
            "service_status",
            "Service status",
            CATEGORY_DIAGNOSTIC,
            "One service's state, or every failed service when no name is given.",
            (_p("service", help="service name; empty for all failed services", max_length=200),),
        ),
        ActionKind(
            "log_errors",
            "Recent log errors",
            CATEGORY_DIAGNOSTIC,
            "Errors from the system journal/syslog (event log on Windows) in a time window.",
            (
                _p("since_minutes", "int", default=60, minimum=1, maximum=10080),
                _p("limit", "int", default=50, minimum=1, maximum=1000),
            ),
        ),
        ActionKind(
            "disk_usage",
            "Disk usage and I/O latency",
            CATEGORY_DIAGNOSTIC,
            "Usage per volume and average I/O latency per disk.",
        ),
        ActionKind(
            "top_processes",
            "Top processes",
            CATEGORY_DIAGNOSTIC,
            "Processes using the most CPU or memory.",
            (
                _p("sort", default="cpu", choices=("cpu", "memory")),
                _p("limit", "int", default=15, minimum=1, maximum=200),
            ),
        ),
        ActionKind(
            "network_config",
            "Network configuration",
            CATEGORY_DIAGNOSTIC,
            "Interfaces, addresses, routes and DNS servers.",
        ),
        ActionKind(
            "dns_resolve",
            "DNS resolution",
            CATEGORY_DIAGNOSTIC,
            "Resolve a name with the system resolver, or against a given DNS server.",
            (
                _p("name", required=True, max_length=253),
                _p("server", max_length=255),
                _p("record_type", default="A", choices=("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "PTR")),
            ),
        ),
        ActionKind(
            "tcp_connect",
            "TCP connect test",
            CATEGORY_DIAGNOSTIC,
            "Open a TCP connection to host:port and time it.",
            (
                _p("host", required=True, max_length=255),
                _p("port", "int", required=True, minimum=1, maximum=65535),
                _p("timeout", "int", default=5, minimum=1, maximum=60),
            ),
        ),
        ActionKind(
            "http_check",
            "HTTP(S) check",
            CATEGORY_DIAGNOSTIC,
            "Request a URL and report status, timing and TLS certificate expiry.",
            (_p("url", required=True, max_length=2000), _p("timeout", "int", default=10, minimum=1, maximum=120)),
        ),
        ActionKind(
            "listening_ports",
            "Listening ports",
            CATEGORY_DIAGNOSTIC,
            "TCP/UDP ports listening on this machine, with their processes.",
        ),
        ActionKind(
            "file_tail",
            "Tail of a file",
            CATEGORY_DIAGNOSTIC,
            "The last lines of a file on the endpoint's allowed list of paths.",
            (_p("path", required=True, max_length=1024), _p("lines", "int", default=100, minimum=1, maximum=5000)),
        ),
        ActionKind(
            "pending_reboot",
            "Pending reboot and uptime",
            CATEGORY_DIAGNOSTIC,
            "Whether the machine waits for a reboot, and how long it has been up.",
        ),
        ActionKind(
            "service_restart",
            "Restart a service",
            CATEGORY_COMMAND,
            "Restart one service and report its state afterwards.",
            (_p("service", required=True, max_length=200),),
            default_timeout=120.0,
        ),
        ActionKind(
            "event_log",
            "Windows event log",
            CATEGORY_DIAGNOSTIC,
            "Events of any channel (System, Application, Security, Microsoft-Windows-.../Operational), "
            "filtered by provider, level, event ids and time range. Windows only.",
            (
                _p("channel", default="System", max_length=255),
                _p("provider", help="provider name(s), comma-separated", max_length=500),
                _p("levels", help="comma-separated: critical, error, warning, information, verbose", max_length=100),
                _p("event_ids", help="comma-separated event ids", max_length=200),
                _p("since_minutes", "int", default=60, minimum=1, maximum=43200),
                _p("until_minutes_ago", "int", default=0, minimum=0, maximum=43200),
                _p("limit", "int", default=50, minimum=1, maximum=1000),
            ),
        ),
        ActionKind(
            "windows_update",
            "Windows Update",
            CATEGORY_DIAGNOSTIC,
            "Last installed update and the updates waiting to install. Windows only.",
            default_timeout=180.0,
        ),
        ActionKind(
            "defender_status",
            "Microsoft Defender",
            CATEGORY_DIAGNOSTIC,
            "Whether Defender is enabled, how old its signatures are, when it last scanned. Windows only.",
        ),
        ActionKind(
            "bitlocker_status",
            "BitLocker",
            CATEGORY_DIAGNOSTIC,
            "Protection and encryption state of every volume. Windows only.",
        ),
        ActionKind(
            "registry_read",
            "Registry value or key",
            CATEGORY_DIAGNOSTIC,
            "One value, or the values and subkeys of a key, under the allowed registry paths. Windows only.",
            (_p("path", required=True, max_length=1024), _p("value", max_length=255)),
        ),
        ActionKind(
            "iis_status",
            "IIS sites and application pools",
            CATEGORY_DIAGNOSTIC,
            "State and bindings of every IIS site, state of every application pool (appcmd). Windows only.",
        ),
        ActionKind(
            "sql_server_check",
            "SQL Server reachability",
            CATEGORY_DIAGNOSTIC,
            "The SQL Server service's state (local instance) and a TDS pre-login to host:port (version, encryption).",
            (
                _p("host", default="127.0.0.1", max_length=255),
                _p("port", "int", default=1433, minimum=1, maximum=65535),
                _p("instance", default="MSSQLSERVER", max_length=100),
            ),
        ),
        ActionKind(
            "ldap_check",
            "LDAP bind and search",
            CATEGORY_DIAGNOSTIC,
            "A bind (anonymous, or as bind_dn with its password) and a read of the RootDSE (naming contexts, "
            "DC name, time); optionally checks a base DN.",
            (
                _p("host", required=True, max_length=255),
                _p("port", "int", minimum=1, maximum=65535),
                _p("tls", "bool", default=False),
                _p("base_dn", max_length=500),
                _p("bind_dn", help="DN or user@domain to bind as; empty: anonymous", max_length=500),
                _p("password", "secret", help="bind_dn's password (never shown or kept)", max_length=512),
            ),
            # A DN with an empty password is an "unauthenticated bind" (RFC 4513 5.1.2) that servers
            # may accept without checking anything: never sent.
            together=(("bind_dn", "password"),),
        ),
        ActionKind(
            "dc_health",
            "Domain controller health",
            CATEGORY_DIAGNOSTIC,
            "dcdiag's tests and repadmin's replication summary, parsed. Windows domain controllers only.",
            default_timeout=300.0,
        ),
        ActionKind(
            "shell",
            "Shell command",
            CATEGORY_SHELL,
            "Run a command line with the system shell: /bin/sh on Linux and macOS, PowerShell on Windows "
            "(or cmd when asked).",
            (
                _p("command", required=True, max_length=8000, multiline=True),
                # "" first: the console's picker shows it as the default choice (the endpoint's own shell).
                _p("shell", choices=("", *SHELL_CHOICES), help="empty: the endpoint's default shell", max_length=20),
            ),
            default_timeout=300.0,
        ),
    )
}


def validate_params(kind_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check and coerce an action's parameters against its kind; raises ProtocolError."""
    kind = ACTION_KINDS.get(kind_name)
    if kind is None:
        raise ProtocolError("unknown_action", f"unknown action kind {kind_name!r}")
    if not isinstance(params, dict):
        raise ProtocolError("invalid_params", "params must be an object")
    known = {spec.name for spec in kind.params}
    unknown = set(params) - known
    if unknown:
        raise ProtocolError("invalid_params", f"unknown parameters: {', '.join(sorted(unknown))}")
    clean: dict[str, Any] = {}
    for spec in kind.params:
        value = params.get(spec.name)
        if value is None or value == "":
            if spec.required:
                raise ProtocolError("invalid_params", f"{spec.name} is required")
            if spec.default is not None:
                clean[spec.name] = spec.default
            continue
        clean[spec.name] = _coerce(spec, value)
    for names in kind.together:
        given = [name for name in names if clean.get(name) not in (None, "")]
        if given and len(given) != len(names):
            raise ProtocolError("invalid_params", f"{' and '.join(names)} go together: give all or none")
    return clean


# C0 (but tab), DEL, C1, and the bidirectional overrides and isolates that reorder what is shown
# ("Trojan Source"): characters that make the text a person approves differ from what runs.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def control_character(text: str, *, multiline: bool = False) -> int | None:
    """The index of the first character not allowed in a parameter, or None."""
    found = (_CONTROL if multiline else _CONTROL_ONE_LINE).search(text)
    return found.start() if found else None


_SHOWN_AS_IS = "\t\n"
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _picture(found: re.Match[str]) -> str:
    char = found.group()
    if char in _SHOWN_AS_IS:
        return char
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ESC is shown as ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"


def visible(text: str) -> str:
    """Text with its control characters shown instead of acted on (ESC as ␛, a C1 or bidi control as
    <U+009B>): wherever a person reads what they approve (terminal, dialog, web page, e-mail)."""
    return _ANY_CONTROL.sub(_picture, text)


def _coerce(spec: ParamSpec, value: Any) -> Any:
    if spec.type == "int":
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ProtocolError("invalid_params", f"{spec.name} must be a whole number") from None
        if spec.minimum is not None and number < spec.minimum or spec.maximum is not None and number > spec.maximum:
            raise ProtocolError("invalid_params", f"{spec.name} must be between {spec.minimum} and {spec.maximum}")
        return number
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes", "on")
    text = str(value)
    bad = control_character(text, multiline=spec.multiline)
    if bad is not None and spec.type == "secret":
        raise ProtocolError("invalid_params", f"{spec.name} contains a control character")  # not where: not shown
    if bad is not None:
        raise ProtocolError(
            "invalid_params",
            f"{spec.name} contains the control character U+{ord(text[bad]):04X} at position {bad + 1};"
            " control characters can hide what will run from the person approving it",
        )
    if len(text) > spec.max_length:
        raise ProtocolError("invalid_params", f"{spec.name} is longer than {spec.max_length} characters")
    if spec.choices and text not in spec.choices:
        raise ProtocolError("invalid_params", f"{spec.name} must be one of {', '.join(spec.choices)}")
    return text
