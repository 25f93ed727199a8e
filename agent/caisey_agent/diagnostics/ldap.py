"""ldap_check: an LDAP bind and a search, with just enough BER (RFC 4511) to need no library.

Binds anonymously (no credentials travel as action parameters, which the server stores),
then reads the RootDSE (base "" scope base): naming contexts, the DC's DNS name, its time,
whether it is synchronised, functional levels. With ``base_dn``, also checks that this entry
exists and is readable (scope base, (objectClass=*)). Works on every platform.
"""

from __future__ import annotations

import socket
import ssl
import time

from caisey_agent.diagnostics import Context, Outcome
from caisey_agent.diagnostics.render import kv

ROOTDSE_ATTRS = (
    "defaultNamingContext",
    "rootDomainNamingContext",
    "namingContexts",
    "dnsHostName",
    "serverName",
    "currentTime",
    "isSynchronized",
    "isGlobalCatalogReady",
    "domainFunctionality",
    "forestFunctionality",
    "domainControllerFunctionality",
    "supportedLDAPVersion",
    "vendorName",
)
RESULT_CODES = {
    0: "success",
    1: "operationsError",
    32: "noSuchObject",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    53: "unwillingToPerform",
}


# --- BER ----------------------------------------------------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + value


def ber_int(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def read_tlv(buf: bytes, i: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, next index); ValueError when truncated."""
    if i + 2 > len(buf):
        raise ValueError("truncated BER element")
    tag, first = buf[i], buf[i + 1]
    i += 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or i + n > len(buf):
            raise ValueError("bad BER length")
        length = int.from_bytes(buf[i : i + n], "big")
        i += n
    else:
        length = first
    if i + length > len(buf):
        raise ValueError("truncated BER element")
    return tag, buf[i : i + length], i + length


def children(value: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(value):
        tag, inner, i = read_tlv(value, i)
        out.append((tag, inner))
    return out


def bind_request(message_id: int, dn: str = "", password: str = "") -> bytes:
    op = tlv(0x60, ber_int(3) + tlv(0x04, dn.encode()) + tlv(0x80, password.encode()))
    return tlv(0x30, ber_int(message_id) + op)


def search_request(message_id: int, base: str, attributes: tuple[str, ...] = ()) -> bytes:
    op = tlv(
        0x63,
        tlv(0x04, base.encode())
        + ber_int(0, 0x0A)  # scope: baseObject
        + ber_int(0, 0x0A)  # derefAliases: never
        + ber_int(1)  # sizeLimit
        + ber_int(10)  # timeLimit (s)
        + tlv(0x01, b"\x00")  # typesOnly: false
        + tlv(0x87, b"objectClass")  # filter: (objectClass=*)
        + tlv(0x30, b"".join(tlv(0x04, a.encode()) for a in attributes)),
    )
    return tlv(0x30, ber_int(message_id) + op)


def parse_message(raw: bytes) -> tuple[int, int, bytes]:
    """(message id, protocolOp tag, protocolOp value) of one LDAPMessage."""
    tag, value, _ = read_tlv(raw)
    if tag != 0x30:
        raise ValueError("not an LDAP message")
    parts = children(value)
    if len(parts) < 2 or parts[0][0] != 0x02:
        raise ValueError("not an LDAP message")
    return int.from_bytes(parts[0][1], "big"), parts[1][0], parts[1][1]


def parse_result(value: bytes) -> dict:
    parts = children(value)
    code = int.from_bytes(parts[0][1], "big")
    return {
        "code": code,
        "result": RESULT_CODES.get(code, str(code)),
        "matched_dn": parts[1][1].decode("utf-8", "replace"),
        "message": parts[2][1].decode("utf-8", "replace"),
    }


def parse_entry(value: bytes) -> tuple[str, dict[str, list[str]]]:
    parts = children(value)
    dn = parts[0][1].decode("utf-8", "replace")
    attrs: dict[str, list[str]] = {}
    for _, attr in children(parts[1][1]):
        kids = children(attr)
        name = kids[0][1].decode("utf-8", "replace")
        attrs[name] = [v.decode("utf-8", "replace") for _, v in children(kids[1][1])]
    return dn, attrs


# --- the conversation ----------------------------------------------------------------------------


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> tuple[int, int, bytes]:
        while True:
            try:
                _, _, end = read_tlv(self.buffer)
            except ValueError:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the LDAP server closed the connection") from None
                self.buffer += chunk
                continue
            raw, self.buffer = self.buffer[:end], self.buffer[end:]
            return parse_message(raw)


def search(conn: Connection, message_id: int, base: str, attributes: tuple[str, ...]) -> tuple[dict, list]:
    conn.send(search_request(message_id, base, attributes))
    entries = []
    while True:
        mid, tag, value = conn.receive()
        if mid != message_id:
            continue
        if tag == 0x64:
            entries.append(parse_entry(value))
        elif tag == 0x65:
            return parse_result(value), entries
        elif tag == 0x73:  # search result reference
            continue
        else:
            raise ValueError(f"unexpected LDAP answer (tag {tag:#x})")


def ldap_check(ctx: Context) -> Outcome:
    host = ctx.params["host"]
    tls = bool(ctx.params.get("tls"))
    port = int(ctx.params.get("port") or (636 if tls else 389))
    base_dn = ctx.params.get("base_dn") or ""
    timeout = ctx.remaining(15)
    data: dict = {"host": host, "port": port, "tls": tls}
    start = time.perf_counter()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        data["error"] = f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    data["connect_ms"] = round((time.perf_counter() - start) * 1000, 2)
    try:
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
        with sock:
            sock.settimeout(timeout)
            conn = Connection(sock)
            t = time.perf_counter()
            conn.send(bind_request(1))
            mid, tag, value = conn.receive()
            if tag != 0x61:
                raise ValueError(f"expected a bind response, got tag {tag:#x}")
            data["bind"] = {**parse_result(value), "anonymous": True, "ms": round((time.perf_counter() - t) * 1000, 2)}
            t = time.perf_counter()
            result, entries = search(conn, 2, "", ROOTDSE_ATTRS)
            data["rootdse"] = entries[0][1] if entries else {}
            data["rootdse_result"] = result["result"]
            data["search_ms"] = round((time.perf_counter() - t) * 1000, 2)
            if base_dn:
                result, entries = search(conn, 3, base_dn, ("distinguishedName",))
                data["base_dn"] = {"dn": base_dn, **result, "found": bool(entries)}
            conn.send(tlv(0x30, ber_int(4) + tlv(0x42, b"")))  # unbind
    except (OSError, ValueError, ConnectionError, ssl.SSLError) as exc:
        data["error"] = f"LDAP conversation with {host}:{port} failed: {exc}"
        return Outcome(data=data, text=data["error"], ok=False, error=data["error"])
    return ldap_outcome(data)


def ldap_outcome(data: dict) -> Outcome:
    root = data.get("rootdse", {})
    problems = []
    if data["bind"]["code"] != 0:
        problems.append(f"anonymous bind refused: {data['bind']['result']} {data['bind']['message']}".strip())
    if not root:
        problems.append("the RootDSE could not be read")
    base = data.get("base_dn")
    if base and not base["found"]:
        problems.append(f"{base['dn']}: {base['result']} {base['message']}".strip())
    first = lambda name: (root.get(name) or [None])[0]  # noqa: E731
    text = kv(
        [
            (
                "Server",
                f"{data['host']}:{data['port']}{' (LDAPS)' if data['tls'] else ''}, connected in {data['connect_ms']} ms",
            ),
            ("Bind", f"anonymous: {data['bind']['result']} in {data['bind']['ms']} ms"),
            ("DNS host name", first("dnsHostName")),
            ("Default naming context", first("defaultNamingContext")),
            ("Server time", first("currentTime")),
            ("Synchronized", first("isSynchronized")),
            ("Search", f"{data.get('rootdse_result')} in {data.get('search_ms')} ms"),
        ]
        + ([("Base DN", f"{base['dn']}: {'found' if base['found'] else base['result']}")] if base else [])
    )
    return Outcome(data=data, text=text, ok=not problems, error="; ".join(problems))
