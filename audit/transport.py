"""Sending a batch to a collector, with bounded time and size, from a checked address.

Every network step has a deadline (``AUDIT_SEND_TIMEOUT_S`` for the whole batch): a collector
that hangs, accepts and never reads, or answers slowly holds one delivery task that long at
most, never another sink (each sink is its own task) nor the worker beyond it.

Server-side request forgery: the destination's name is resolved here and every address it
resolves to is checked; loopback, link-local, private, multicast and reserved addresses are
refused unless a tenant admin allowed them on the sink (``allow_private``). The connection goes
to the address that was checked (a name that resolves elsewhere a moment later is not
followed); TLS still verifies the certificate against the name.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

# A collector's answer is read up to this much (a huge body is not read further).
MAX_RESPONSE_BYTES = 64 * 1024


class SendError(Exception):
    """The batch was not accepted; the message says why (shown as the sink's last error)."""


@dataclass(frozen=True)
class Destination:
    kind: str  # syslog_tcp | json_https
    host: str
    port: int
    tls: bool
    path: str = "/"
    ca_pem: str = ""
    allow_private: bool = False


def timeout_s() -> float:
    return float(settings.CAISEY.get("AUDIT_SEND_TIMEOUT_S", 10.0))


def address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a tenant's destination may not be this address without the admin's permission, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for test, what in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved or ip.is_unspecified, "reserved"),
    ):
        if test:
            return what
    return None


def resolve_checked(host: str, port: int, *, allow_private: bool) -> tuple[int, tuple]:
    """(family, sockaddr) of the first address ``host`` resolves to, each one checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SendError(f"cannot resolve {host!r}: {exc}") from None
    if not infos:
        raise SendError(f"{host!r} resolves to no address")
    if not allow_private:
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            why = address_refused(ip)
            if why:
                raise SendError(
                    f"{host!r} resolves to {ip}, a {why} address: refused unless a tenant admin allows "
                    "private destinations on this sink"
                )
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _context(ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_pem.strip():
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise SendError(f"the sink's CA certificates do not load: {exc}") from None
    return context


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise SendError("the collector did not finish within the send timeout")
        return remaining


def _connect(dest: Destination, deadline: _Deadline) -> socket.socket:
    family, sockaddr = resolve_checked(dest.host, dest.port, allow_private=dest.allow_private)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.left())
        sock.connect(sockaddr)
        if dest.tls:
            sock.settimeout(deadline.left())
            return _context(dest.ca_pem).wrap_socket(sock, server_hostname=dest.host)
        return sock
    except BaseException:
        sock.close()
        raise


def _sendall(sock: socket.socket, data: bytes, deadline: _Deadline) -> None:
    # One bounded write at a time: a collector that stops reading fills its window, and the
    # deadline (not a per-call timeout that restarts with every chunk) ends the attempt.
    view = memoryview(data)
    while view:
        sock.settimeout(deadline.left())
        sent = sock.send(view[:65536])
        view = view[sent:]


def send_syslog(dest: Destination, frames: bytes) -> None:
    """Write octet-counted frames on a fresh connection, then close our side and wait for the
    collector to close its side. A collector closes after reading everything up to our end of
    stream, so its close says it read the whole batch, which a successful write alone does not
    (the kernel's buffers accept it). It does not say the collector wrote it anywhere: syslog
    over TCP has no application-level acknowledgement (RELP has; docs/integrations.md)."""
    deadline = _Deadline(timeout_s())
    try:
        sock = _connect(dest, deadline)
    except SendError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise SendError(f"the collector's certificate is not trusted: {exc.verify_message or exc}") from None
    except (OSError, ssl.SSLError) as exc:
        raise SendError(f"cannot connect to {dest.host}:{dest.port}: {exc}") from None
    try:
        _sendall(sock, frames, deadline)
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(deadline.left())
            try:
                sock = sock.unwrap()  # close_notify, and the collector's in return
            except TimeoutError:
                raise SendError("the collector did not close the TLS session within the send timeout") from None
            except (ssl.SSLError, OSError):
                return  # it closed the connection after reading through our close_notify
        sock.shutdown(socket.SHUT_WR)
        while True:
            sock.settimeout(deadline.left())
            if not sock.recv(4096):
                return
    except SendError:
        raise
    except (OSError, ssl.SSLError) as exc:
        raise SendError(f"sending to {dest.host}:{dest.port} failed: {exc}") from None
    finally:
        sock.close()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the address that was checked (``sockaddr``), verifying the certificate for the name."""

    def __init__(self, dest: Destination, deadline: _Deadline) -> None:
        super().__init__(dest.host, dest.port, timeout=deadline.left(), context=_context(dest.ca_pem))
        self._dest = dest
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self._dest, self._deadline)


def send_https(dest: Destination, body: bytes) -> int:
    """POST JSON lines; any 2xx accepts the batch (redirects are not followed: a 3xx is a failure).
    Returns the status."""
    deadline = _Deadline(timeout_s())
    connection = _PinnedHTTPSConnection(dest, deadline)
    try:
        connection.request(
            "POST",
            dest.path or "/",
            body=body,
            headers={
                "Content-Type": "application/x-ndjson",
                "User-Agent": "caisey-audit/1",
            },
        )
        sock = connection.sock  # http.client drops its reference once the answer says it closes
        sock.settimeout(deadline.left())
        response = connection.getresponse()
        # Read the answer, bounded (a huge one is cut, not read), and to its declared end: a
        # collector that closes mid-response may not have kept the batch, whatever its status said.
        wanted = MAX_RESPONSE_BYTES if response.length is None else min(response.length, MAX_RESPONSE_BYTES)
        got = 0
        while got < wanted:
            sock.settimeout(deadline.left())
            chunk = response.read(min(65536, wanted - got))
            if not chunk:
                break
            got += len(chunk)
        if response.length is not None and got < wanted:
            raise SendError("the collector closed the connection mid-response")
        if not 200 <= response.status < 300:
            raise SendError(f"the collector answered HTTP {response.status} {response.reason}"[:300])
        return response.status
    except SendError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise SendError(f"the collector's certificate is not trusted: {exc.verify_message or exc}") from None
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise SendError(f"POST to {dest.host}:{dest.port} failed: {exc!r}"[:500]) from None
    finally:
        connection.close()


def destination_of(sink) -> Destination:
    if sink.kind == "json_https":
        parts = urlsplit(sink.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Destination(
            kind=sink.kind,
            host=parts.hostname or "",
            port=parts.port or 443,
            tls=True,
            path=path,
            ca_pem=sink.ca_pem,
            allow_private=sink.allow_private,
        )
    return Destination(
        kind=sink.kind,
        host=sink.host,
        port=int(sink.port or 0),
        tls=sink.tls,
        ca_pem=sink.ca_pem,
        allow_private=sink.allow_private,
    )
