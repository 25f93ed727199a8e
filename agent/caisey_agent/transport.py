"""How the agent reaches the server: encrypted, and optionally pinned.

* Plain ``http://`` / ``ws://`` only to this machine (loopback) unless ``--insecure`` was given at
  enrollment: elsewhere the enrollment token, the agent's credential and every command would
  cross the network in the clear.
* ``https://`` / ``wss://`` verified against the system's CAs, or a CA bundle given at enrollment.
* Optionally the server's public key pinned at enrollment (``--pin-key``): the SHA-256 of the
  certificate's SubjectPublicKeyInfo, written ``sha256/<base64>`` as in RFC 7469. A pin of the key,
  not of the certificate, survives a renewal that keeps the key. It is checked after the TLS
  handshake, before anything secret is sent.

The settings are kept with the identity (caisey_agent/state.py), so `run` uses what `enroll` did.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import ssl
from urllib.parse import urlsplit

PIN_PREFIX = "sha256/"


class TransportError(Exception):
    pass


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_server(url: str, *, insecure: bool) -> None:
    """Refuse a server address the agent must not talk to (unencrypted and not this machine)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise TransportError(f"{url!r} is not an http(s):// address of a server")
    if parts.scheme in ("http", "ws") and not insecure and not is_loopback(parts.hostname):
        raise TransportError(
            f"refusing to talk to {parts.hostname} over {parts.scheme}:// (unencrypted): the enrollment token, "
            "the agent's credential and every command would cross the network in the clear. "
            "Use https://, or pass --insecure to accept that"
        )


def ssl_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Certificate and host name verified, against ``ca_bundle`` (a PEM file) if given, else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"cannot read the CA bundle {ca_bundle}: {exc}") from None


def public_key_pin(der_certificate: bytes) -> str:
    """``sha256/<base64>`` of the certificate's SubjectPublicKeyInfo."""
    # cryptography is imported here, only when a key is pinned: its Rust extension does not load under
    # Wine 8 (bin/test-windows), and importing it with this module stopped every agent command there.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    spki = (
        x509.load_der_x509_certificate(der_certificate)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return PIN_PREFIX + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> str:
    """The pin of the server's key on this connection; ``TransportError`` when ``pin`` is set and differs."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise TransportError("the connection has no server certificate to check the pinned key against")
    seen = public_key_pin(der)
    if pin and seen != pin:
        raise TransportError(
            f"the server's public key ({seen}) is not the one pinned at enrollment ({pin}): not sending "
            "anything. If the server's key was changed on purpose, enroll again with --replace"
        )
    return seen


def validate_pin(pin: str) -> str:
    if not pin.startswith(PIN_PREFIX):
        raise TransportError(f"a key pin looks like {PIN_PREFIX}<base64 of 32 bytes>, not {pin!r}")
    try:
        raw = base64.b64decode(pin[len(PIN_PREFIX) :], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise TransportError(f"a key pin looks like {PIN_PREFIX}<base64 of 32 bytes>, not {pin!r}")
    return pin
