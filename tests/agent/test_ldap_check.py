"""ldap_check (ldap3) against a real OpenLDAP server and against a fake one.

The real one is Debian's slapd, started here as an ordinary process on a free port with a
throwaway configuration and database (no root-only setup, nothing system-wide). The fake one
answers with bytes built here and reads the agent's requests with its own minimal BER decoder,
so what the agent sends on the wire is checked independently of ldap3.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caisey_agent.diagnostics import Context, ldap
from caisey_agent.policy import LocalPolicy

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)
SLAPADD = shutil.which("slapadd") or ("/usr/sbin/slapadd" if os.path.exists("/usr/sbin/slapadd") else None)


BIND_DN = "cn=admin,dc=corp,dc=example"
BIND_PASSWORD = "s3cret-Bind-pw"


def run(params):
    return ldap.ldap_check(Context(params=params, policy=LocalPolicy()))


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


# --- a real OpenLDAP ------------------------------------------------------------------------------


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    if SLAPD is None or SLAPADD is None:
        if os.environ.get("CI"):
            pytest.fail("slapd is not installed (apt-get install slapd); CI installs it in .ci/run")
        pytest.skip("slapd is not installed (apt-get install slapd)")
    tmp = tmp_path_factory.mktemp("slapd")
    (tmp / "db").mkdir()
    cert_file, key_file = self_signed(tmp)
    conf = tmp / "slapd.conf"
    conf.write_text(
        "include /etc/ldap/schema/core.schema\n"
        "include /etc/ldap/schema/cosine.schema\n"
        "modulepath /usr/lib/ldap\n"
        "moduleload back_mdb\n"
        f"pidfile {tmp / 'slapd.pid'}\n"
        f"TLSCertificateFile {cert_file}\n"
        f"TLSCertificateKeyFile {key_file}\n"
        "database mdb\n"
        'suffix "dc=corp,dc=example"\n'
        'rootdn "cn=admin,dc=corp,dc=example"\n'
        f"rootpw {BIND_PASSWORD}\n"
        f"directory {tmp / 'db'}\n"
        "access to * by * read\n"
    )
    (tmp / "data.ldif").write_text(
        "dn: dc=corp,dc=example\nobjectClass: dcObject\nobjectClass: organization\no: Corp\ndc: corp\n\n"
        "dn: ou=Servers,dc=corp,dc=example\nobjectClass: organizationalUnit\nou: Servers\n"
    )
    subprocess.run([SLAPADD, "-f", str(conf), "-l", str(tmp / "data.ldif")], check=True, capture_output=True)
    port, tls_port = free_port(), free_port()
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"slapd did not start: {proc.communicate()[1].decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
    yield {"port": port, "tls_port": tls_port, "ca": cert_file}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_real_slapd_bind_rootdse_and_base_dn(slapd):
    out = run({"host": "127.0.0.1", "port": slapd["port"], "base_dn": "ou=Servers,dc=corp,dc=example"})
    assert out.ok, out.error
    assert out.data["bind"] == {**out.data["bind"], "code": 0, "result": "success", "anonymous": True}
    assert out.data["rootdse"]["namingContexts"] == ["dc=corp,dc=example"]
    assert out.data["rootdse"]["supportedLDAPVersion"] == ["3"]
    assert out.data["base_dn"]["found"] is True and out.data["base_dn"]["code"] == 0
    assert f"127.0.0.1:{slapd['port']}" in out.text


def test_real_slapd_missing_base_dn_is_a_failure_with_the_servers_answer(slapd):
    out = run({"host": "127.0.0.1", "port": slapd["port"], "base_dn": "ou=Gone,dc=corp,dc=example"})
    assert not out.ok
    assert out.data["base_dn"] == {**out.data["base_dn"], "found": False, "code": 32, "result": "noSuchObject"}
    assert out.data["base_dn"]["matched_dn"] == "dc=corp,dc=example"
    assert out.error.startswith("ou=Gone,dc=corp,dc=example: noSuchObject")


def test_real_slapd_ldaps_is_verified(slapd, monkeypatch):
    params = {"host": "localhost", "port": slapd["tls_port"], "tls": True}
    # The certificate is trusted nowhere: refused, not silently accepted (ldap3's default).
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
    out = run(params)
    assert not out.ok and "certificate verify failed" in out.error, out.error
    # Trusted through SSL_CERT_FILE (what the Windows service sets from CA_BUNDLE): it works.
    monkeypatch.setenv("SSL_CERT_FILE", str(slapd["ca"]))
    out = run(params)
    assert out.ok, out.error
    assert out.data["tls"] is True and out.data["rootdse"]["namingContexts"] == ["dc=corp,dc=example"]
    assert "(LDAPS)" in out.text
    # Trusted, but the name asked for is not the certificate's: refused.
    out = run({**params, "host": "127.0.0.1"})
    assert not out.ok, out.data


def test_real_slapd_authenticated_bind_over_ldaps(slapd, monkeypatch):
    """bind_dn + password (a "secret" parameter): a simple bind over LDAPS; the password is in neither
    the result's data nor its text."""
    monkeypatch.setenv("SSL_CERT_FILE", str(slapd["ca"]))
    params = {"host": "localhost", "port": slapd["tls_port"], "tls": True, "bind_dn": BIND_DN}
    out = run({**params, "password": BIND_PASSWORD, "base_dn": "ou=Servers,dc=corp,dc=example"})
    assert out.ok, out.error
    assert out.data["bind"] == {**out.data["bind"], "code": 0, "result": "success", "anonymous": False, "as": BIND_DN}
    assert f"bind as {BIND_DN}: success" in out.text
    assert BIND_PASSWORD not in out.text and BIND_PASSWORD not in json.dumps(out.data)

    out = run({**params, "password": "not-" + BIND_PASSWORD})
    assert not out.ok
    assert out.data["bind"]["code"] == 49 and out.data["bind"]["result"] == "invalidCredentials"
    assert out.error.startswith(f"bind as {BIND_DN} refused: invalidCredentials")
    assert BIND_PASSWORD not in out.text + out.error + json.dumps(out.data)


def test_a_password_is_never_sent_in_clear_or_without_its_dn():
    port = free_port()  # nothing listens: the refusals come before any connection
    out = run({"host": "127.0.0.1", "port": port, "bind_dn": BIND_DN, "password": BIND_PASSWORD})
    assert not out.ok and out.error == "a password is sent only over LDAPS: set tls (port 636)"
    out = run({"host": "127.0.0.1", "port": port, "tls": True, "bind_dn": BIND_DN})
    assert not out.ok and out.error == "bind_dn and password go together"  # never an unauthenticated bind
    assert BIND_PASSWORD not in json.dumps(out.data)


# --- a fake server with its own BER ---------------------------------------------------------------


def T(tag: int, value: bytes) -> bytes:  # noqa: N802 - a short BER encoder, independent of ldap3
    assert len(value) < 0x10000
    if len(value) < 0x80:
        return bytes([tag, len(value)]) + value
    return bytes([tag, 0x82]) + len(value).to_bytes(2, "big") + value


def decode(buf: bytes, i: int = 0) -> tuple[int, bytes, int]:
    """One BER element at ``i``: (tag, value, end); IndexError when ``buf`` holds only part of it."""
    tag, first = buf[i], buf[i + 1]
    i += 2
    if first & 0x80:  # long form: the next (first & 0x7F) bytes are the length
        n = first & 0x7F
        if i + n > len(buf):
            raise IndexError("partial length")
        length, i = int.from_bytes(buf[i : i + n], "big"), i + n
    else:
        length = first
    if i + length > len(buf):
        raise IndexError("partial element")
    return tag, buf[i : i + length], i + length


def elements(value: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(value):
        tag, inner, i = decode(value, i)
        out.append((tag, inner))
    return out


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
                        tag, value, end = decode(buf)
                    except IndexError:
                        break
                    buf = buf[end:]
                    assert tag == 0x30
                    (_, mid_raw), (op, body), *_ = elements(value)
                    mid = int.from_bytes(mid_raw, "big")
                    received.append((mid, op, body))
                    if op == 0x60:
                        conn.sendall(msg(mid, result(0x61, 0)))
                    elif op == 0x63:
                        base = elements(body)[0][1]
                        if base == b"":
                            conn.sendall(msg(mid, ROOTDSE) + msg(mid, result(0x65, 0)))
                        elif base_found:
                            entry = T(0x64, T(0x04, base) + T(0x30, b""))
                            conn.sendall(msg(mid, entry) + msg(mid, result(0x65, 0)))
                        else:
                            conn.sendall(msg(mid, result(0x65, 32, b"0000208D: NameErr: DSID-0310028D, problem 2001")))
                    elif op == 0x42:
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, received


def test_fake_ad_bind_and_rootdse():
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
    # What the agent sent: a v3 anonymous simple bind, base-scope searches, an unbind. The unbind
    # needs no answer, so the fake's thread may still be reading it (seen under load: 3 of 4).
    deadline = time.monotonic() + 10
    while len(received) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [op for _, op, _ in received] == [0x60, 0x63, 0x63, 0x42]
    version, name, auth = elements(received[0][2])
    assert version == (0x02, b"\x03") and name == (0x04, b"") and auth == (0x80, b"")
    for (_, _, body), base in zip(received[1:3], (b"", b"OU=Servers,DC=corp,DC=example"), strict=True):
        base_obj, scope, *_ = elements(body)
        assert base_obj == (0x04, base) and scope == (0x0A, b"\x00")
    assert "dc01.corp.example" in out.text


def test_fake_ad_missing_base_dn_fails_with_the_servers_reason():
    server, _ = fake_server(base_found=False)
    try:
        out = run({"host": "127.0.0.1", "port": server.getsockname()[1], "base_dn": "OU=Gone,DC=corp,DC=example"})
    finally:
        server.close()
    assert not out.ok
    assert "OU=Gone,DC=corp,DC=example: noSuchObject 0000208D" in out.error


def test_nothing_listening():
    port = free_port()
    out = run({"host": "127.0.0.1", "port": port})
    assert not out.ok and out.error.startswith(f"cannot connect to 127.0.0.1:{port}")


def test_server_closing_mid_conversation_is_a_failure():
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()  # no bind response

    threading.Thread(target=serve, daemon=True).start()
    try:
        out = run({"host": "127.0.0.1", "port": server.getsockname()[1]})
    finally:
        server.close()
    assert not out.ok and out.error.startswith("LDAP conversation with 127.0.0.1"), out.error
