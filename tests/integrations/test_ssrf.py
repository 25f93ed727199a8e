from __future__ import annotations

import socket

import pytest

from caisey.errors import Rejected
from integrations import ssrf


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",  # shared address space (carrier-grade NAT)
        "http://240.0.0.1/hook",  # reserved
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(url):
    with pytest.raises(Rejected, match="address"):
        ssrf.resolve(url, allow_private=False)
    assert ssrf.resolve(url, allow_private=True).address


def test_public_addresses_pass_and_the_checked_address_is_the_one_used():
    target = ssrf.resolve("https://1.1.1.1/hook", allow_private=False)
    assert (target.scheme, target.host, target.port, target.address) == ("https", "1.1.1.1", 443, "1.1.1.1")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://1.1.1.1/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("https://user:pw@1.1.1.1/x", "user name"),
        ("https:///nohost", "no host"),
        ("https://1.1.1.1:99999/x", "not a valid URL"),
    ],
)
def test_malformed_destinations_are_refused(url, why):
    with pytest.raises(Rejected, match=why):
        ssrf.resolve(url, allow_private=True)


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch):
    """A host with one public and one private address is refused: the connection could go to either."""

    def fake(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(Rejected, match="private"):
        ssrf.resolve("https://hooks.example.com/x", allow_private=False)
