"""Through a real TLS-terminating proxy (nginx, test CA): the agent over wss:// with a CA bundle and a
pinned key, and the server trusting that proxy's headers only (issue 11, items 8 and 11)."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.e2e.stack import AGENT_BIN, REPO, AgentProcess, wait_for
from tests.e2e.tls_proxy import PROXY_ADDRESS, TLSProxy

pytestmark = pytest.mark.e2e

BEHIND_PROXY = {"CAISEY_TRUSTED_PROXIES": PROXY_ADDRESS, "CAISEY_HTTPS": "true", "CAISEY_RATE_SHARE": "2"}


@pytest.fixture
def proxy(stack, request):
    p = TLSProxy(stack.workdir, stack.port)
    try:
        yield p
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(p.logs())
        p.stop()


def https(proxy: TLSProxy, path: str, *, source: str, headers: dict | None = None) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(proxy.pki.ca_pem))
    conn = http.client.HTTPSConnection("localhost", proxy.port, context=context, source_address=(source, 0), timeout=15)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize("stack", [BEHIND_PROXY], indirect=True)
def test_the_agent_enrolls_and_runs_over_wss_through_the_proxy_with_a_pinned_key(stack, proxy):
    stack.seed()
    state_dir = stack.workdir / "tls-agent"
    enrolled = subprocess.run(
        [
            *AGENT_BIN,
            "enroll",
            "--server",
            proxy.url,
            "--token",
            stack.token("acme", "erp"),
            "--state-dir",
            str(state_dir),
            "--hostname",
            "tls01",
            "--ca-bundle",
            str(proxy.pki.ca_pem),
            "--pin-key",
        ],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    assert "server key pinned: sha256/" in enrolled.stdout
    agent = AgentProcess(stack, state_dir, stack.workdir / "tls01.log")
    stack.agents.append(agent)
    agent.start()
    status = agent.status()
    assert status["server"] == proxy.url and status["key_pin"].startswith("sha256/")

    def connection():
        return stack.json(
            "import json; from bridge.models import AgentConnection;"
            f"c = AgentConnection.all_tenants.filter(endpoint_id='{status['endpoint_id']}').first();"
            "print(json.dumps(c and {'ip': c.remote_ip}))"
        )

    wait_for(lambda: connection() is not None, timeout=60, what="the agent connected through nginx")
    # The client's address as nginx forwarded it, not the proxy's own.
    assert connection() == {"ip": "127.0.0.1"}
    assert "WSCONNECT /ws/agent/" in "\n".join(p.read_text() for p in stack.workdir.glob("daphne-*.log"))
    # The server records the connection before the agent has read its welcome and logged it (seen in CI).
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="the agent logged its connection")


@pytest.mark.parametrize("stack", [BEHIND_PROXY], indirect=True)
def test_rate_limits_through_the_proxy_count_the_forwarded_client_not_the_proxy(stack, proxy):
    attacker, victim = "127.0.0.2", "127.0.0.3"
    # The attacker also writes the victim's address into X-Forwarded-For: nginx appends the real
    # peer, and the server takes the right-most address its trusted proxy added.
    statuses = [
        https(proxy, f"/share/shr_{i:04d}{'g' * 39}/", source=attacker, headers={"X-Forwarded-For": victim}).status
        for i in range(21)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {404}, statuses
    answer = https(proxy, f"/share/shr_real{'v' * 39}/", source=victim)
    assert answer.status == 404  # answered, not locked out by the attacker
    # Served over https through the proxy: HSTS; straight to Daphne over http: redirected to https.
    assert "max-age=" in (https(proxy, "/login/", source=victim).headers.get("Strict-Transport-Security") or "")
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(f"http://127.0.0.1:{stack.port}/login/", timeout=10)
    assert redirect.value.code == 301 and redirect.value.headers["Location"].startswith("https://")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
