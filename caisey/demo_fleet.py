"""The demo's simulated fleet (``manage.py demo``; off with ``--no-sim-fleet``).

Beside the real local agent, a few simulated agents across both client groups, so that every
connectivity state shows on first run: lazy ones, an active one (a session is open on it), one
degraded through a slow link, one offline with actions queued for it. Each is real to the server:

- enrolled through the agent enrollment API with an enrollment token issued ``simulated`` (the
  endpoint is marked so at enrollment: the console shows a "simulated" badge);
- connected by bench/sim_fleet.py (bench/loadgen.py's agents: the real protocol over WebSockets);
- degraded by the server's own health figures: that agent handles each frame ``link_delay`` seconds
  late, so its acknowledgements come later than the degraded latency limit;
- offline because it connected once and went away; its actions are asked for through the normal
  services (a session opened by the demo technician, ``action_request``) and wait in the outbox.

Identities are kept in ``<data>/sim-fleet/agents.json`` (0600) and reused while the database knows
them, as the local agent's are.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from caisey import tenancy
from caisey.actors import Party
from endpoints import services
from endpoints.models import AgentMode, ClientGroup, Endpoint, EndpointStatus, Presence, Tenant
from endpoints.presence import presence_of
from sessions_app.models import Action, ActionStatus, SessionStatus, SupportSession, WakeChoice
from sessions_app.services import actions as action_services
from sessions_app.services import sessions as session_services

LAZY, ACTIVE, DEGRADED, OFFLINE = "lazy", "active", "degraded", "offline"
SESSION_REASON = "simulated fleet: shows this state in the demo"
# The diagnostics queued for the offline endpoint: read-only, so no approval prompt holds them.
QUEUED_KINDS = ("system_summary", "disk_usage")


@dataclass(frozen=True)
class SimAgent:
    hostname: str
    group: str  # client group slug
    os: str
    shows: str  # the state the demo sets it up to show: LAZY, ACTIVE, DEGRADED, OFFLINE


FLEET = (
    SimAgent("acme-ws01", "acme", "windows", LAZY),
    SimAgent("acme-ws02", "acme", "windows", ACTIVE),
    SimAgent("acme-branch-pc", "acme", "windows", DEGRADED),
    SimAgent("brightside-fd01", "brightside", "windows", LAZY),
    SimAgent("brightside-xray", "brightside", "linux", LAZY),
    SimAgent("brightside-laptop", "brightside", "windows", OFFLINE),
)


def link_delay() -> float:
    """The slow link's delay: half again the server's degraded latency limit (5 s by default: 7.5 s)."""
    return settings.CAISEY["DEGRADED_P95_LATENCY_MS"] / 1000 * 1.5


def machine_id(agent: SimAgent) -> str:
    return f"simulated-{agent.hostname}"


def enroll(*, url: str, tenant: Tenant, state_file: Path, fleet: tuple[SimAgent, ...] = FLEET) -> list[dict]:
    """Identities for the fleet: the kept ones the database still knows, the others enrolled now
    through the enrollment API (a simulated token per client group). Returns the agents file's rows."""
    kept = _read(state_file)
    rows, missing = [], []
    for agent in fleet:
        ident = kept.get(agent.hostname)
        if ident and _known(tenant, ident["endpoint_id"]):
            rows.append({**ident, **asdict(agent)})
        else:
            missing.append(agent)
    by_group: dict[str, list[SimAgent]] = {}
    for agent in missing:
        by_group.setdefault(agent.group, []).append(agent)
    for slug, agents in by_group.items():
        with tenancy.bind(tenant.pk):
            group = ClientGroup.objects.get(slug=slug)
        _, token = services.enrollment_token_issue(
            actor=Party.OPERATOR,
            client_group=group,
            expires_in=timedelta(minutes=10),
            max_uses=len(agents),
            note="demo simulated fleet",
            simulated=True,
        )
        for agent in agents:
            # replace: a kept identity the file lost (or a database reused) rotates, not refuses.
            answer = _post_json(
                f"{url}/api/agent/v1/enroll",
                {"token": token, "machine_id": machine_id(agent), "hostname": agent.hostname, "replace": True},
            )
            rows.append({"endpoint_id": answer["endpoint_id"], "credential": answer["credential"], **asdict(agent)})
    _write(state_file, rows)
    return rows


def agents_file(rows: list[dict], path: Path) -> None:
    """What bench/sim_fleet.py reads: identity, name, and how each behaves on the wire."""
    delay = link_delay()
    spec = [
        {
            "endpoint_id": row["endpoint_id"],
            "credential": row["credential"],
            "hostname": row["hostname"],
            "os": row["os"],
            "link_delay": delay if row["shows"] == DEGRADED else 0.0,
            "leave": row["shows"] == OFFLINE,
        }
        for row in rows
    ]
    _write_private(path, json.dumps(spec, indent=1))


def on_the_wire(*, tenant: Tenant, rows: list[dict]) -> bool:
    """True once every simulated agent got where the wire takes it: the staying ones connected,
    the leaving one connected once and gone."""
    with tenancy.bind(tenant.pk):
        endpoints = {str(e.pk): e for e in Endpoint.objects.filter(pk__in=[r["endpoint_id"] for r in rows])}
    for row in rows:
        endpoint = endpoints.get(row["endpoint_id"])
        if endpoint is None or endpoint.last_seen_at is None:
            return False
        offline = presence_of(endpoint) == Presence.OFFLINE
        if offline != (row["shows"] == OFFLINE):
            return False
    return True


def set_the_scene(*, tenant: Tenant, rows: list[dict], technician: str) -> list[str]:
    """What the technician would do, through the normal services: a session on the active one and
    on the slow one (each wakes its endpoint: a mode.set the slow link acknowledges late), and two
    diagnostics asked of the offline one. What an earlier run set up is kept while it still holds:
    a session whose endpoint has rested since is closed and a new one opened; diagnostics are
    queued again once none wait."""
    user = get_user_model().objects.select_related("membership").get(username=technician)
    done = []
    with tenancy.bind(tenant.pk):
        for row in rows:
            endpoint = Endpoint.objects.get(pk=row["endpoint_id"])
            if row["shows"] not in (ACTIVE, DEGRADED, OFFLINE):
                continue
            session = SupportSession.objects.filter(
                endpoint=endpoint, status=SessionStatus.OPEN, reason=SESSION_REASON
            ).first()
            if session is not None and row["shows"] != OFFLINE and endpoint.mode != AgentMode.ACTIVE:
                # An earlier run's session, idle since: the endpoint rested. A fresh one wakes it.
                session_services.session_close(actor=user, session=session, reason="the demo started again")
                session = None
            if session is None:
                # The offline one is not woken: its work waits for it to come back.
                wake = row["shows"] != OFFLINE
                session = session_services.session_open(actor=user, endpoint=endpoint, reason=SESSION_REASON, wake=wake)
                done.append(f"opened a session on {endpoint.hostname}")
            if row["shows"] == OFFLINE:
                waiting = Action.objects.filter(endpoint=endpoint, status=ActionStatus.QUEUED).count()
                if not waiting:
                    for kind in QUEUED_KINDS:
                        action_services.action_request(
                            actor=user, session=session, kind=kind, params={}, wake=WakeChoice.WAIT
                        )
                    done.append(f"queued {len(QUEUED_KINDS)} diagnostics for {endpoint.hostname}")
    return done


def _known(tenant: Tenant, endpoint_id: str) -> bool:
    with tenancy.bind(tenant.pk):
        return Endpoint.objects.filter(pk=endpoint_id, status=EndpointStatus.ENROLLED, simulated=True).exists()


def _read(path: Path) -> dict[str, dict]:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {row["hostname"]: {"endpoint_id": row["endpoint_id"], "credential": row["credential"]} for row in rows}


def _write(path: Path, rows: list[dict]) -> None:
    _write_private(path, json.dumps(rows, indent=1))


def _write_private(path: Path, text: str) -> None:
    """Credentials inside: readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"enrolling a simulated agent failed: HTTP {exc.code} {exc.read()[:300]!r}") from None
    except OSError as exc:  # refused, timed out
        raise RuntimeError(f"enrolling a simulated agent failed: {exc}") from None
