"""ldap_check against a fake LDAP server speaking RFC 4511 BER (responses built here byte by byte,
independently of the agent's encoder)."""

from __future__ import annotations

import socket
import threading

from caisey_agent.diagnostics import Context, ldap
from caisey_agent.policy import LocalPolicy


def T(tag: int, value: bytes) -> bytes:  # noqa: N802 - a short BER helper, independent of ldap.tlv
    assert len(value) < 0x10000
    if len(value) < 0x80:
        return bytes([tag, len(value)]) + value
    return bytes([tag, 0x82]) + len(value).to_bytes(2, "big") + value


def msg(mid: int, op: bytes) -> bytes:
    return T(0x30, T(0x02, bytes([mid])) + op)


def result(tag: int, code: int, message: bytes = b"") -> bytes:
    return T(tag, T(0x0A, bytes([code])) + T(0x04, b"") + T(0x04, message))


ROOTDSE = T(
    0x64,
    T(0x04, b"")
    + T(
        0x30,
        T(0x30, T(0x04, b"dnsHostName") + T(0x31, T(0x04, b"dc01.corp.example")))
        + T(0x30, T(0x04, b"defaultNamingContext") + T(0x31, T(0x04, b"DC=corp,DC=example")))
        + T(0x30, T(0x04, b"isSynchronized") + T(0x31, T(0x04, b"TRUE")))
        + T(
            0x30,
            T(0x04, b"namingContexts")
            + T(0x31, T(0x04, b"DC=corp,DC=example") + T(0x04, b"CN=Configuration,DC=corp,DC=example")),
        ),
    ),
)


def fake_server(base_found: bool):
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            buf = b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while buf:
                    try:
                        _, _, end = ldap.read_tlv(buf)
                    except ValueError:
                        break
                    mid, tag, value = ldap.parse_message(buf[:end])
                    buf = buf[end:]
                    received.append((mid, tag, value))
                    if tag == 0x60:
                        conn.sendall(msg(mid, result(0x61, 0)))
                    elif tag == 0x63:
                        base = ldap.children(value)[0][1]
                        if base == b"":
                            conn.sendall(msg(mid, ROOTDSE) + msg(mid, result(0x65, 0)))
                        elif base_found:
                            entry = T(0x64, T(0x04, base) + T(0x30, b""))
                            conn.sendall(msg(mid, entry) + msg(mid, result(0x65, 0)))
                        else:
                            conn.sendall(msg(mid, result(0x65, 32, b"0000208D: NameErr: DSID-0310028D, problem 2001")))
                    elif tag == 0x42:
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, received


def run(params):
    return ldap.ldap_check(Context(params=params, policy=LocalPolicy()))


def test_bind_and_rootdse():
    server, received = fake_server(base_found=True)
    port = server.getsockname()[1]
    try:
        out = run({"host": "127.0.0.1", "port": port, "base_dn": "OU=Servers,DC=corp,DC=example"})
    finally:
        server.close()
    assert out.ok, out.error
    assert out.data["bind"]["result"] == "success"
    assert out.data["rootdse"]["dnsHostName"] == ["dc01.corp.example"]
    assert out.data["rootdse"]["namingContexts"][1] == "CN=Configuration,DC=corp,DC=example"
    assert out.data["base_dn"]["found"] is True
    # What the agent sent: a v3 anonymous simple bind, then base-scope searches.
    bind = ldap.children(received[0][2])
    assert bind[0] == (0x02, b"\x03") and bind[1] == (0x04, b"") and bind[2] == (0x80, b"")
    assert [tag for _, tag, _ in received][:3] == [0x60, 0x63, 0x63]
    assert "dc01.corp.example" in out.text


def test_missing_base_dn_fails_with_the_servers_reason():
    server, _ = fake_server(base_found=False)
    try:
        out = run({"host": "127.0.0.1", "port": server.getsockname()[1], "base_dn": "OU=Gone,DC=corp,DC=example"})
    finally:
        server.close()
    assert not out.ok
    assert "OU=Gone,DC=corp,DC=example: noSuchObject 0000208D" in out.error


def test_nothing_listening():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    out = run({"host": "127.0.0.1", "port": port})
    assert not out.ok and out.error.startswith(f"cannot connect to 127.0.0.1:{port}")


def test_long_ber_lengths_round_trip():
    value = b"x" * 300
    tag, inner, end = ldap.read_tlv(ldap.tlv(0x04, value))
    assert (tag, inner, end) == (0x04, value, 304)
