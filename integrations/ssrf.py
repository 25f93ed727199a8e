"""Server-side request forgery guard for webhook destinations.

A destination's host is resolved and every address it resolves to must be public (not loopback,
private, link-local, multicast, reserved, unspecified, or shared address space), unless the
tenant's admin allowed private targets for that destination. Checked when the destination is
saved and again at every send, since DNS can change; the send then connects to the checked
address itself (``pinned``), so a rebinding between the check and the connect cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from caisey.errors import Rejected

ALLOWED_SCHEMES = ("https", "http")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written (the Host header and the TLS server name)
    port: int
    address: str  # the checked address the request connects to


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return _forbidden(ip.ipv4_mapped)
    for test, why in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_unspecified, "unspecified"),
        (not ip.is_global, "not public"),
    ):
        if test:
            return why
    return None


def parse(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise Rejected("the destination is not a valid URL") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise Rejected("the destination must be an https:// (or http://) URL")
    if not parts.hostname:
        raise Rejected("the destination URL has no host")
    if parts.username or parts.password:
        raise Rejected("the destination URL must not carry a user name or password")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, *, allow_private: bool) -> Target:
    """The address to connect to, checked; raises ``Rejected`` saying why not."""
    scheme, host, port = parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Rejected(f"the destination's host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Rejected(f"the destination's host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            why = _forbidden(ipaddress.ip_address(address.split("%", 1)[0]))
            if why:
                raise Rejected(
                    f"the destination's host {host!r} resolves to a {why} address ({address}); a tenant admin "
                    "may allow private destinations for it"
                )
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])
