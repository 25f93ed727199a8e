"""Exchanging an enrollment token for a persistent identity (HTTP, standard library only)."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

from caisey_agent import transport
from caisey_agent.state import AgentState, Identity

ENROLL_PATH = "/api/agent/v1/enroll"


class EnrollError(Exception):
    pass


def enroll(
    *,
    state: AgentState,
    server: str,
    token: str,
    replace: bool = False,
    hostname: str = "",
    insecure: bool = False,
    ca_bundle: str = "",
    pin_key: bool = False,
    key_pin: str = "",
) -> Identity:
    """Enroll this machine. ``pin_key``: record the server's public key seen now (verified by its CA)
    and accept no other from then on; ``key_pin``: the key it must have, checked before the token
    is sent. ``insecure``: allow http:// to another machine. All kept with the identity for `run`."""
    existing = state.identity()
    if existing is not None and not replace:
        raise EnrollError(
            f"already enrolled as endpoint {existing.endpoint_id} with {existing.server}; "
            "pass --replace to replace this machine's identity"
        )
    server = server.rstrip("/")
    try:
        transport.check_server(server, insecure=insecure)
        if key_pin:
            transport.validate_pin(key_pin)
    except transport.TransportError as exc:
        raise EnrollError(str(exc)) from None
    if (pin_key or key_pin) and urlsplit(server).scheme != "https":
        raise EnrollError("pinning the server's key needs an https:// server")
    body = {
        "token": token,
        "machine_id": state.machine_id(),
        "hostname": hostname or socket.gethostname(),
        "replace": replace,
    }
    try:
        status, payload, seen_pin = post_json(server, ENROLL_PATH, body, ca_bundle=ca_bundle, key_pin=key_pin)
    except transport.TransportError as exc:
        raise EnrollError(str(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollError(f"could not reach {server}: {exc}") from None
    if status >= 300:
        try:
            detail = json.loads(payload)
            message = f"{detail.get('detail')} ({detail.get('error')})"
        except (ValueError, AttributeError):
            message = http.client.responses.get(status, "unexpected answer")
        raise EnrollError(f"enrollment refused by server: {message} [HTTP {status}]")
    answer = json.loads(payload)
    identity = Identity(
        server=server,
        endpoint_id=answer["endpoint_id"],
        credential=answer["credential"],
        machine_id=body["machine_id"],
        tenant=answer.get("tenant", ""),
        client_group=answer.get("client_group", ""),
        hostname=hostname,
        insecure=insecure,
        ca_bundle=ca_bundle,
        key_pin=key_pin or (seen_pin if pin_key else ""),
    )
    state.save_identity(identity)
    return identity


def post_json(server: str, path: str, body: dict, *, ca_bundle: str, key_pin: str) -> tuple[int, bytes, str]:
    """POST ``body`` as JSON; (status, answer, the server key's pin or "" over http). Over https the
    key is checked against ``key_pin`` after the handshake, before the request (with the token) goes."""
    parts = urlsplit(server)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=30, context=transport.ssl_context(ca_bundle)
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.connect()
        seen = transport.check_pin(conn.sock, key_pin) if parts.scheme == "https" else ""  # type: ignore[arg-type]
        conn.request(
            "POST",
            parts.path.rstrip("/") + path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read(), seen
    finally:
        conn.close()
