"""The outage scenario: four technicians, four endpoints, the same minute, nobody waiting."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e

HOSTS = ("app01", "db01", "dc01", "dc02")
FINAL = ("succeeded", "failed", "timed_out", "cancelled", "expired", "failed_to_deliver")


class Api:
    """One technician's REST client (its own API token) against the stack's Daphne."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.base}{path}",
            method=method,
            headers=self.headers,
            data=json.dumps(body).encode() if body is not None else None,
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def test_four_technicians_run_diagnostics_on_four_endpoints_at_once(stack):
    stack.seed()
    techs = [f"tech-{host}" for host in HOSTS]
    stack.django(
        "from endpoints import services; from endpoints.models import Role, Tenant; t = Tenant.all_tenants.get(slug='acme');"
        + "".join(
            f"services.membership_create(tenant=t, username='{name}', password='e2e-password-1', role=Role.TECHNICIAN);"
            for name in techs
        )
    )
    agents = [stack.enroll_agent(stack.port, stack.token("acme", "erp"), name=host) for host in HOSTS]
    for agent in agents:
        agent.start()
    wait_for(lambda: all("connected as" in a.log_text() for a in agents), timeout=60, what="four agents connected")
    apis = [Api(stack.port, stack.manage("issue_api_token", "--user", name).strip()) for name in techs]

    start = threading.Barrier(len(HOSTS))
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def technician(api: Api, agent, host: str) -> None:
        try:
            start.wait(timeout=30)  # the same minute: all four begin together
            t0 = time.monotonic()
            session = api.call("POST", "/sessions/", {"endpoint": agent.endpoint_id, "reason": f"ERP down: {host}"})
            queued = [
                api.call("POST", f"/sessions/{session['id']}/actions/", {"kind": kind, "params": params})
                for kind, params in (
                    ("system_summary", {}),
                    ("top_processes", {}),
                    ("tcp_connect", {"host": "127.0.0.1", "port": stack.port}),
                )
            ]

            def all_final() -> list[dict] | None:
                now = [api.call("GET", f"/actions/{q['id']}/") for q in queued]
                return now if all(a["status"] in FINAL for a in now) else None

            done = wait_for(all_final, timeout=90, interval=0.5, what=f"{host}'s diagnostics")
            results[host] = {"session": session, "actions": done, "seconds": time.monotonic() - t0}
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=technician, args=(api, agent, host))
        for api, agent, host in zip(apis, agents, HOSTS, strict=False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    assert not errors, errors
    assert set(results) == set(HOSTS)
    print(
        "\nper technician, session opened to three results in:",
        ", ".join(f"{host} {r['seconds']:.1f} s" for host, r in sorted(results.items())),
    )

    for host, tech in zip(HOSTS, techs, strict=False):
        actions = results[host]["actions"]
        assert [a["status"] for a in actions] == ["succeeded"] * 3, [
            (a["kind"], a["status"], a["error"]) for a in actions
        ]
        assert {a["requested_by"] for a in actions} == {tech}
        record = stack.json(
            "import json; from sessions_app.models import TranscriptEntry;"
            f"print(json.dumps(list(TranscriptEntry.all_tenants.filter(session_id='{results[host]['session']['id']}')"
            ".order_by('index').values_list('kind', 'actor'))))"
        )
        kinds = [kind for kind, _ in record]
        assert kinds[0] == "session.opened" and kinds.count("action.result") == 3
        # Every step the technician took is attributed to them; the rest to the agent or the bridge.
        assert {actor for kind, actor in record if kind in ("session.opened", "action.queued")} == {f"user:{tech}"}
        assert {actor for kind, actor in record if kind in ("action.running", "action.result")} == {"agent"}
    # Nobody asked the client for approval: the policy gates shell commands only.
    assert stack.json("import json; from sessions_app.models import Prompt; print(Prompt.all_tenants.count())") == 0


def test_bulk_run_across_a_client_group_waits_for_the_offline_endpoint(stack):
    login = stack.seed()
    agents = {
        host: stack.enroll_agent(stack.port, stack.token("acme", "erp"), name=host)
        for host in ("till01", "till02", "till03")
    }
    for host in ("till01", "till02"):
        agents[host].start()
    # till03 enrolled but is switched off: offline when the run starts.
    wait_for(
        lambda: all("connected as" in agents[h].log_text() for h in ("till01", "till02")),
        timeout=60,
        what="two agents connected",
    )
    api = Api(stack.port, stack.manage("issue_api_token", "--user", login["username"]).strip())
    run = api.call(
        "POST", "/bulk-runs/", {"kind": "system_summary", "params": {}, "client_group": "erp", "reason": "tills slow"}
    )
    assert run["progress"]["total"] == 3

    def rows() -> dict[str, str]:
        return {r["endpoint"]["hostname"]: r["status"] for r in api.call("GET", f"/bulk-runs/{run['id']}/")["rows"]}

    wait_for(
        lambda: (r := rows())["till01"] == "succeeded" and r["till02"] == "succeeded",
        timeout=60,
        what="the online tills' results",
    )
    assert rows()["till03"] == "queued"  # kept queued while it is away
    progress = api.call("GET", f"/bulk-runs/{run['id']}/")["progress"]
    assert progress == {"total": 3, "done": 2, "waiting": 1}

    agents["till03"].start()  # it comes back: the queued action runs then
    wait_for(lambda: rows()["till03"] == "succeeded", timeout=60, what="till03's result after it returned")
    assert api.call("GET", f"/bulk-runs/{run['id']}/")["progress"] == {"total": 3, "done": 3, "waiting": 0}
