"""Exchanging an enrollment token for a persistent identity (HTTP, standard library only)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from caisey_agent.state import AgentState, Identity


class EnrollError(Exception):
    pass


def enroll(*, state: AgentState, server: str, token: str, replace: bool = False, hostname: str = "") -> Identity:
    existing = state.identity()
    if existing is not None and not replace:
        raise EnrollError(
            f"already enrolled as endpoint {existing.endpoint_id} with {existing.server}; "
            "pass --replace to replace this machine's identity"
        )
    server = server.rstrip("/")
    body = {
        "token": token,
        "machine_id": state.machine_id(),
        "hostname": hostname or socket.gethostname(),
        "replace": replace,
    }
    request = urllib.request.Request(
        f"{server}/api/agent/v1/enroll",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
            message = f"{detail.get('detail')} ({detail.get('error')})"
        except ValueError:
            message = exc.reason
        raise EnrollError(f"enrollment refused by server: {message} [HTTP {exc.code}]") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EnrollError(f"could not reach {server}: {exc}") from None
    identity = Identity(
        server=server,
        endpoint_id=answer["endpoint_id"],
        credential=answer["credential"],
        machine_id=body["machine_id"],
        tenant=answer.get("tenant", ""),
        client_group=answer.get("client_group", ""),
        hostname=hostname,
    )
    state.save_identity(identity)
    return identity
