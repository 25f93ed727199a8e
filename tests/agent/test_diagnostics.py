"""Every diagnostic of the catalogue, run for real on this machine through the action runner.

Network checks only talk to servers these tests start on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import psutil
import pytest

from caisey_agent import protocol as p
from caisey_agent.diagnostics import Context, NotAvailable, logs, network, registry, services
from caisey_agent.policy import LocalPolicy
from caisey_agent.state import AgentState
from tests.agent.test_actions import FakeAgent, assert_frames_well_formed, run_action, write_policy

NOT_AVAILABLE = "not available on this endpoint: "
HAS_SYSTEMD = os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


@pytest.fixture
def agent(tmp_path):
    state = AgentState(tmp_path / "state")
    yield FakeAgent(state)
    state.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_every_catalogue_kind_has_an_implementation():
    implemented = set(registry()) | {"shell"}
    assert implemented == set(p.ACTION_KINDS)


# --- system ------------------------------------------------------------------------------------


async def test_system_summary(agent):
    action_id, result = await run_action(agent, "system_summary")
    assert result.status == "succeeded"
    data = result.result["data"]
    assert data["hostname"] == socket.gethostname()
    assert data["uptime_s"] > 0
    assert data["memory"]["total"] == psutil.virtual_memory().total
    assert data["os"]["system"] == "Linux"
    assert data["process_count"] > 1
    assert data["hostname"] in result.result["text"]
    assert_frames_well_formed(agent, action_id)


async def test_pending_reboot(agent):
    _, result = await run_action(agent, "pending_reboot")
    assert result.status == "succeeded"
    data = result.result["data"]
    assert data["pending"] in (True, False, None)
    assert data["uptime_s"] > 0
    assert data["checks"], "at least one check is reported, available or not"
    flag = os.path.exists("/var/run/reboot-required")
    if flag:
        assert data["pending"] is True
    assert "Pending reboot:" in result.result["text"]


# --- services ----------------------------------------------------------------------------------


async def test_service_status_all_failed(agent):
    _, result = await run_action(agent, "service_status")
    if HAS_SYSTEMD:
        assert result.status == "succeeded"
        assert isinstance(result.result["data"]["failed_units"], list)
    else:
        assert result.status == "failed"
        assert result.error.startswith(NOT_AVAILABLE)
        assert "systemd" in result.error


async def test_service_status_one_service(agent):
    _, result = await run_action(agent, "service_status", {"service": "cron.service"})
    if HAS_SYSTEMD:
        assert result.result["data"]["service"]["unit"] in ("cron.service", "")
    else:
        assert result.status == "failed" and result.error.startswith(NOT_AVAILABLE)


async def test_service_restart_on_this_endpoint(agent):
    _, result = await run_action(agent, "service_restart", {"service": "caisey-test-no-such-unit"})
    assert result.status == "failed"
    if HAS_SYSTEMD:
        assert "not found" in result.error
    else:
        assert result.error.startswith(NOT_AVAILABLE)


async def test_service_name_cannot_be_an_option():
    with pytest.raises(ValueError):
        services.check_name("--root=/")
    with pytest.raises(ValueError):
        services.check_name("a b")
    assert services.check_name("getty@tty1.service") == "getty@tty1.service"


def test_missing_systemd_is_not_available(monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    ctx = Context(params={}, policy=LocalPolicy())
    with pytest.raises(NotAvailable, match="systemctl is not installed"):
        services.service_status(ctx)


# --- logs --------------------------------------------------------------------------------------


async def test_log_errors_on_this_endpoint(agent):
    _, result = await run_action(agent, "log_errors", {"since_minutes": 30, "limit": 5})
    if result.status == "succeeded":
        data = result.result["data"]
        assert data["window"]["minutes"] == 30
        assert data["returned"] <= 5 and data["count"] >= data["returned"]
    else:
        # No journal files and no syslog file in this container.
        assert result.status == "failed"
        assert result.error.startswith(NOT_AVAILABLE)
        assert "journal" in result.error


async def test_log_errors_from_a_syslog_file(agent, tmp_path, monkeypatch):
    now = time.time()
    stamp = lambda ago: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - ago))  # noqa: E731
    bsd = time.strftime("%b %e %H:%M:%S", time.localtime(now - 60))
    lines = [
        f"{stamp(7200)} host app[1]: error: too old to count",
        f"{stamp(300)} host sshd[42]: Failed password for root",
        f"{stamp(200)} host kernel: all is well",
        f"{stamp(100)} host app[7]: ERROR database unreachable",
        f"{bsd} host cron[9]: (root) error in crontab",
        "garbage line without a timestamp error",
    ]
    syslog = tmp_path / "syslog"
    syslog.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(logs, "SYSLOG_FILES", (str(syslog),))
    monkeypatch.setattr(logs, "_journal_usable", lambda: False)
    _, result = await run_action(agent, "log_errors", {"since_minutes": 60, "limit": 2})
    assert result.status == "succeeded", result.error
    data = result.result["data"]
    assert data["count"] == 3
    assert data["returned"] == 2
    # newest first
    assert [e["identifier"] for e in data["entries"]] == ["cron", "app"]
    assert data["entries"][1]["pid"] == 7
    assert "3 error entries in the last 60 min" in result.result["text"]


def test_syslog_line_formats():
    ts, host, rest = logs.parse_syslog_line("2024-05-01T12:00:00.123456+00:00 web1 nginx[5]: boom")
    assert (host, rest) == ("web1", "nginx[5]: boom")
    assert ts == pytest.approx(1714564800.123456)
    parsed = logs.parse_syslog_line("May  1 12:00:00 web1 nginx: boom", now=1714564800 + 3600)
    assert parsed is not None and parsed[1] == "web1"
    assert logs.parse_syslog_line("not a log line") is None


async def test_file_tail_reads_the_last_lines(agent, tmp_path):
    write_policy(agent, {"allowed_tail_paths": [str(tmp_path / "*.log")]})
    log_file = tmp_path / "big.log"
    log_file.write_text("".join(f"line {i}\n" for i in range(100_000)))
    action_id, result = await run_action(agent, "file_tail", {"path": str(log_file), "lines": 3})
    assert result.status == "succeeded"
    data = result.result["data"]
    assert data["lines"] == ["line 99997", "line 99998", "line 99999"]
    assert data["resolved_path"] == str(log_file)
    assert data["size"] == log_file.stat().st_size
    assert "line 99999" in agent.stream(action_id, "stdout")


def test_tail_bytes_edge_cases(tmp_path):
    def tail(content: bytes, n: int, max_bytes: int = 1 << 20):
        path = tmp_path / "f"
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            return logs.tail_bytes(fd, len(content), n, max_bytes)
        finally:
            os.close(fd)

    assert tail(b"", 5) == (b"", False)
    assert tail(b"a\nb\nc\n", 2) == (b"b\nc\n", False)
    assert tail(b"a\nb\nc", 2) == (b"b\nc", False)
    assert tail(b"a\nb\nc\n", 10) == (b"a\nb\nc\n", False)
    assert tail(b"x" * 50 + b"\nshort\n", 5, max_bytes=20) == (b"short\n", True)


async def test_file_tail_default_policy_allows_var_log(agent):
    candidates = [os.path.join("/var/log", f) for f in sorted(os.listdir("/var/log"))]
    target = next(f for f in candidates if os.path.isfile(f) and not os.path.islink(f) and os.access(f, os.R_OK))
    _, result = await run_action(agent, "file_tail", {"path": target, "lines": 5})
    assert result.status == "succeeded"
    assert result.result["data"]["lines_returned"] <= 5
    _, refused = await run_action(agent, "file_tail", {"path": "/etc/shadow"})
    assert refused.status == "refused"


async def test_file_tail_refuses_a_device_or_fifo(agent, tmp_path):
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    write_policy(agent, {"allowed_tail_paths": [str(tmp_path / "*")]})
    _, result = await run_action(agent, "file_tail", {"path": str(fifo)}, timeout=5)
    assert result.status == "failed"
    assert "not a regular file" in result.error


# --- disks and processes ----------------------------------------------------------------------------


async def test_disk_usage(agent):
    _, result = await run_action(agent, "disk_usage")
    assert result.status == "succeeded"
    data = result.result["data"]
    root = [v for v in data["volumes"] if v["mountpoint"] == "/"]
    assert root and root[0]["total"] > 0
    assert "two samples" in data["io_method"] or "not available" in data["io_method"]
    for disk in data["io"]:
        assert disk["current"]["interval_s"] >= 0.9
        assert set(disk["since_boot"]) >= {"read_latency_ms", "write_latency_ms"}


async def test_top_processes_by_memory_and_cpu(agent):
    _, by_mem = await run_action(agent, "top_processes", {"sort": "memory", "limit": 5})
    assert by_mem.status == "succeeded"
    procs = by_mem.result["data"]["processes"]
    assert len(procs) == 5
    rss = [p_["memory_rss"] for p_ in procs]
    assert rss == sorted(rss, reverse=True)
    _, by_cpu = await run_action(agent, "top_processes", {"limit": 3})
    cpu = [p_["cpu_percent"] for p_ in by_cpu.result["data"]["processes"]]
    assert cpu == sorted(cpu, reverse=True)
    assert by_cpu.result["data"]["sample_s"] == 0.5


async def test_listening_ports_shows_our_listener(agent):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        _, result = await run_action(agent, "listening_ports")
    assert result.status == "succeeded"
    mine = [e for e in result.result["data"]["ports"] if e["port"] == port and e["proto"] == "tcp"]
    assert mine, f"port {port} not listed"
    assert mine[0]["pid"] == os.getpid()
    assert mine[0]["process"] == psutil.Process().name()
    assert str(port) in result.result["text"]


# --- network ----------------------------------------------------------------------------------------


async def test_network_config(agent):
    _, result = await run_action(agent, "network_config")
    assert result.status == "succeeded"
    data = result.result["data"]
    lo = next(i for i in data["interfaces"] if i["name"] == "lo")
    assert lo["up"] is True
    assert any(a["address"] == "127.0.0.1" for a in lo["addresses"])
    assert isinstance(data["default_routes"], list)
    assert isinstance(data["dns"]["servers"], list)
    assert "lo" in result.result["text"]


async def test_dns_resolve_localhost(agent):
    _, result = await run_action(agent, "dns_resolve", {"name": "localhost"})
    assert result.status == "succeeded"
    data = result.result["data"]
    assert {"type": "A", "value": "127.0.0.1"} in data["answers"]
    assert data["resolver"].startswith("system")
    assert data["elapsed_ms"] >= 0


async def test_dns_resolve_rejects_bad_names(agent):
    _, result = await run_action(agent, "dns_resolve", {"name": "-rf; rm"})
    assert result.status == "failed"
    assert "not a valid DNS name" in result.error


@contextmanager
def dns_server():
    """A tiny authoritative DNS server on 127.0.0.1 (UDP) for example.test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    records = {
        ("www.example.test.", "A"): ["192.0.2.10", "192.0.2.11"],
        ("example.test.", "MX"): ["10 mail.example.test."],
        ("example.test.", "TXT"): ['"v=spf1 -all"'],
    }

    def serve():
        while not stop.is_set():
            try:
                wire, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            q = query.question[0]
            key = (q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
            if key in records:
                response.answer.append(dns.rrset.from_text(q.name, 300, "IN", key[1], *records[key]))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.flags |= dns.flags.AA
            sock.sendto(response.to_wire(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        sock.close()


async def test_dns_resolve_against_a_given_server(agent):
    with dns_server() as server:
        _, a = await run_action(agent, "dns_resolve", {"name": "www.example.test", "server": server})
        _, mx = await run_action(agent, "dns_resolve", {"name": "example.test", "server": server, "record_type": "MX"})
        _, nx = await run_action(agent, "dns_resolve", {"name": "nope.example.test", "server": server})
    assert a.status == "succeeded", a.error
    assert sorted(x["value"] for x in a.result["data"]["answers"]) == ["192.0.2.10", "192.0.2.11"]
    assert a.result["data"]["rcode"] == "NOERROR" and a.result["data"]["authoritative"] is True
    assert a.result["data"]["server"] == server
    assert mx.result["data"]["answers"][0]["value"] == "10 mail.example.test."
    assert mx.result["data"]["answers"][0]["ttl"] == 300
    assert nx.status == "failed"
    assert nx.error.startswith("NXDOMAIN")


async def test_dns_resolve_server_that_does_not_answer(agent):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        _, result = await run_action(agent, "dns_resolve", {"name": "www.example.test", "server": server}, timeout=20)
    assert result.status == "failed"
    assert "no DNS server answered" in result.error
    assert time.monotonic() - began < 10


def test_parse_server():
    assert network.parse_server("1.1.1.1") == ("1.1.1.1", 53)
    assert network.parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert network.parse_server("[::1]:5353") == ("::1", 5353)
    assert network.parse_server("2606:4700::1111") == ("2606:4700::1111", 53)


async def test_tcp_connect_open_and_closed(agent):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        _, ok = await run_action(agent, "tcp_connect", {"host": "127.0.0.1", "port": port})
    assert ok.status == "succeeded"
    data = ok.result["data"]
    assert data["connected"] is True and data["connected_to"] == "127.0.0.1"
    assert 0 <= data["connect_ms"] < 1000
    assert data["attempts"][0]["local_address"].startswith("127.0.0.1:")
    # The listener is closed now: refused.
    _, refused = await run_action(agent, "tcp_connect", {"host": "127.0.0.1", "port": port})
    assert refused.status == "failed"
    assert "refused" in refused.error.lower()
    assert refused.result["data"]["connected"] is False


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        routes = {
            "/ok": (200, None),
            "/missing": (404, None),
            "/r1": (302, "/r2"),
            "/r2": (301, "/ok"),
        }
        if self.path.startswith("/loop"):
            n = int(self.path[5:] or 0)
            status, location = 302, f"/loop{n + 1}"
        elif self.path == "/to-ftp":
            status, location = 302, "ftp://127.0.0.1/x"
        else:
            status, location = routes.get(self.path, (404, None))
        body = b"hello world" if status == 200 else b"nope"
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def http_server(tls_context: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls_context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_http_check_status_timing_and_redirects(agent):
    with http_server() as base:
        _, ok = await run_action(agent, "http_check", {"url": f"{base}/r1"})
        _, missing = await run_action(agent, "http_check", {"url": f"{base}/missing"})
        _, loop = await run_action(agent, "http_check", {"url": f"{base}/loop0"})
        _, ftp = await run_action(agent, "http_check", {"url": f"{base}/to-ftp"})
    assert ok.status == "succeeded", ok.error
    data = ok.result["data"]
    assert data["status"] == 200
    assert data["final_url"] == f"{base}/ok"
    assert [(r["status"], r["to"]) for r in data["redirects"]] == [(302, f"{base}/r2"), (301, f"{base}/ok")]
    assert data["body_bytes_read"] == len(b"hello world")
    assert 0 <= data["response_ms"] <= data["total_ms"]
    assert data["tls"] is None
    assert missing.status == "failed" and missing.result["data"]["status"] == 404
    assert missing.error.startswith("HTTP 404")
    assert loop.status == "failed"
    assert "more than 5 redirects" in loop.error
    assert len([r for r in loop.result["data"]["redirects"]]) <= 6
    assert ftp.status == "failed" and "not followed" in ftp.error


async def test_http_check_rejects_other_schemes(agent):
    _, result = await run_action(agent, "http_check", {"url": "file:///etc/passwd"})
    assert result.status == "failed"
    assert "http:// or https://" in result.error


@pytest.fixture
def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/CN=caisey-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


async def test_http_check_https_certificate_expiry(agent, self_signed, monkeypatch):
    cert, context = self_signed
    with http_server(context) as base:
        _, untrusted = await run_action(agent, "http_check", {"url": f"{base}/ok"})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the system trust store trusts it
        _, trusted = await run_action(agent, "http_check", {"url": f"{base}/ok"})
    assert untrusted.status == "failed"
    assert "certificate verification failed" in untrusted.error
    tls = untrusted.result["data"]["tls"]
    assert tls["verified"] is False
    assert 29 <= tls["days_remaining"] <= 30.1
    assert tls["subject"] == "CN=caisey-test"

    assert trusted.status == "succeeded", trusted.error
    tls = trusted.result["data"]["tls"]
    assert tls["verified"] is True
    assert 29 <= tls["days_remaining"] <= 30.1
    assert tls["subject_alt_names"] == ["127.0.0.1"]
    assert tls["version"].startswith("TLS")
    assert "days left" in trusted.result["text"]
