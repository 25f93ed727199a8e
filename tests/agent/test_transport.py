"""The agent's transport: TLS unless the server is this machine, a CA bundle, a pinned key (issue 11, item 11)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caisey_agent import enroll as enroll_module
from caisey_agent import transport
from caisey_agent.enroll import EnrollError, enroll
from caisey_agent.runner import Agent, AgentStopped
from caisey_agent.state import AgentState, Identity
from tests.tls import make_pki


@pytest.fixture
def state(tmp_path):
    s = AgentState(tmp_path / "state")
    yield s
    s.close()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "ws://127.0.0.5/ws/agent/"]
)
def test_plain_http_to_this_machine_is_allowed(url):
    transport.check_server(url, insecure=False)


@pytest.mark.parametrize("url", ["http://caisey.example.com", "ws://10.0.0.5:8000/ws/agent/", "http://192.168.1.9"])
def test_plain_http_elsewhere_is_refused_unless_insecure(url):
    with pytest.raises(transport.TransportError, match="--insecure"):
        transport.check_server(url, insecure=False)
    transport.check_server(url, insecure=True)


def test_enroll_over_http_to_another_machine_is_refused_before_anything_is_sent(state, monkeypatch):
    """Was: the agent enrolled over http:// without a word, the token in the clear."""

    def post_json(*args, **kwargs):
        raise AssertionError("nothing may be sent")

    monkeypatch.setattr(enroll_module, "post_json", post_json)
    with pytest.raises(EnrollError, match="unencrypted"):
        enroll(state=state, server="http://caisey.example.com", token="cet_x")
    assert state.identity() is None


async def test_run_over_ws_to_another_machine_is_refused(state):
    """Was: the agent ran over ws:// without a word, credential and commands in the clear."""
    state.save_identity(Identity(server="http://caisey.example.com", endpoint_id="e", credential="c", machine_id="m"))
    with pytest.raises(AgentStopped, match="unencrypted"):
        await asyncio.wait_for(Agent(state).run_forever(), timeout=10)


async def test_run_over_ws_elsewhere_goes_ahead_when_enrolled_with_insecure(state):
    state.save_identity(
        Identity(server="http://192.0.2.1:9", endpoint_id="e", credential="c", machine_id="m", insecure=True)
    )
    agent = Agent(state)
    task = asyncio.create_task(agent.run_forever())
    await asyncio.sleep(0.5)  # trying to connect (nobody answers there), not refusing
    assert not task.done()
    agent.stop()
    await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize("pin", ["sha256/abc", "md5/" + "A" * 44, "sha256/" + "A" * 40])
def test_malformed_pins_are_refused(pin):
    with pytest.raises(transport.TransportError):
        transport.validate_pin(pin)


class TLSServer:
    """A local https server answering the enrollment request, and counting what reached it."""

    def __init__(self, tmp_path) -> None:
        self.pki = make_pki(tmp_path / "pki")
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = json.dumps({"endpoint_id": "e1", "credential": "cred", "tenant": "T", "client_group": "G"})
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.cert_pem, self.pki.key_pem)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server(tmp_path):
    server = TLSServer(tmp_path)
    yield server
    server.close()


def test_an_untrusted_certificate_is_refused_and_a_ca_bundle_trusts_it(state, tls_server):
    with pytest.raises(EnrollError, match="CERTIFICATE_VERIFY_FAILED"):
        enroll(state=state, server=tls_server.url, token="cet_x")
    assert tls_server.requests == []
    identity = enroll(state=state, server=tls_server.url, token="cet_x", ca_bundle=str(tls_server.pki.ca_pem))
    assert identity.credential == "cred" and state.identity().ca_bundle == str(tls_server.pki.ca_pem)


def test_the_servers_key_is_pinned_at_enrollment(state, tls_server):
    cert = x509.load_pem_x509_certificate(tls_server.pki.cert_pem.read_bytes())
    expected = transport.public_key_pin(cert.public_bytes(Encoding.DER))
    identity = enroll(
        state=state, server=tls_server.url, token="cet_x", ca_bundle=str(tls_server.pki.ca_pem), pin_key=True
    )
    assert identity.key_pin == expected and state.identity().key_pin == expected


def test_a_server_with_another_key_gets_no_token(state, tls_server):
    wrong = "sha256/" + "A" * 43 + "="
    with pytest.raises(EnrollError, match="not the one pinned"):
        enroll(state=state, server=tls_server.url, token="cet_x", ca_bundle=str(tls_server.pki.ca_pem), key_pin=wrong)
    assert tls_server.requests == [] and state.identity() is None
