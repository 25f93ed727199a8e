"""The audit stream end to end (issue 14 item 3): a real stack (Daphne, a Celery worker with
beat) streams a tenant's transcript entries and security events to rsyslog from Debian's
packages over TCP and to an HTTPS JSON-lines receiver; a collector restarted mid-stream, and a
worker killed mid-delivery, lose nothing, and every duplicate carries an event id seen before."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests import tls
from tests.audit.receivers import HttpsReceiver
from tests.e2e.stack import free_port, wait_for
from tests.tls import make_pki

pytestmark = pytest.mark.e2e

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS_DRIVER = [
    Path(p)
    for p in ("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so", "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so")
]
# Short sends and leases, so a killed worker's lease expires within the test (2 * 2 + 5 s).
FAST = {"CAISEY_AUDIT_SEND_TIMEOUT_S": "2", "CAISEY_AUDIT_SWEEP_S": "0.5", "CAISEY_AUDIT_BATCH": "50"}


class Rsyslog:
    """rsyslogd in the foreground with a config of the test's own: imtcp on a free port
    (octet-counted framing), each message's raw text to one file."""

    def __init__(self, folder: Path, *, pki: tls.TestPKI | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.out = folder / "audit.log"
        self.conf = folder / "rsyslog.conf"
        tls_global = (
            f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{pki.ca_pem}"'
            f' DefaultNetstreamDriverCertFile="{pki.cert_pem}" DefaultNetstreamDriverKeyFile="{pki.key_pem}"'
            if pki
            else ""
        )
        tls_module = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"' if pki else ""
        self.conf.write_text(
            f'global(workDirectory="{folder}"{tls_global})\n'
            f'module(load="imtcp"{tls_module})\n'
            'template(name="raw" type="string" string="%rawmsg%\\n")\n'
            f'ruleset(name="audit") {{ action(type="omfile" file="{self.out}" template="raw") }}\n'
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="audit")\n'
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=open(self.folder / "rsyslogd.out", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import socket

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=20, what="rsyslogd listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        found = []
        for line in self.out.read_text(errors="replace").splitlines():
            if "] {" in line:
                found.append(json.loads(line.split("] ", 1)[1]))
        return found


@pytest.fixture
def rsyslog(tmp_path):
    if not Path(RSYSLOGD).exists():
        pytest.skip("rsyslogd is not installed (bin/install-test-deps installs it from Debian's packages)")
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    yield r
    r.stop()


SETUP = """
from datetime import timedelta
from caisey.actors import Party
from django.contrib.auth import get_user_model
from endpoints import services
from endpoints.models import ClientGroup, SecurityEventKind, Tenant
from endpoints.security_log import security_event_record
from audit.services import SinkInput, audit_sink_create
"""


def _make_events(stack, n: int, tag: str) -> None:
    """``n`` security events, each its own transaction."""
    stack.django(
        SETUP
        + "t = Tenant.objects.get(slug='acme')\n"
        + f"for i in range({n}):\n"
        + f"    security_event_record(tenant_id=t.pk, kind=SecurityEventKind.LOGIN_FAILED, actor=None, target='{tag}-%d' % i)\n"
    )


def _open_session(stack) -> None:
    """An endpoint (enrolled by the service, no agent needed) and a session on it: transcript entries."""
    stack.django(
        SETUP
        + "from sessions_app.services.sessions import session_open\n"
        + "t = Tenant.objects.get(slug='acme')\n"
        + "g = ClientGroup.all_tenants.get(tenant=t, slug='erp')\n"
        + "_, secret = services.enrollment_token_issue(actor=Party.OPERATOR, client_group=g,"
        + " expires_in=timedelta(hours=1), max_uses=1)\n"
        + "r = services.endpoint_enroll(token_secret=secret, machine_id='m-audit-e2e', hostname='audit01')\n"
        + "session_open(actor=get_user_model().objects.get(username='acme-tech'), endpoint=r.endpoint, reason='audit')\n"
    )


def _journal(stack) -> list[str]:
    return stack.json(
        "import json; from caisey import tenancy; from audit.models import AuditRecord; from endpoints.models import Tenant\n"
        "with tenancy.system():\n"
        "    t = Tenant.objects.get(slug='acme')\n"
        "    print(json.dumps([str(e) for e in AuditRecord.objects.filter(tenant=t).values_list('event_id', flat=True)]))"
    )


def _sink(stack, **fields) -> dict:
    return stack.json(
        SETUP
        + "import json\n"
        + "t = Tenant.objects.get(slug='acme')\n"
        + "admin = get_user_model().objects.get(username='acme-admin')\n"
        + f"s = audit_sink_create(actor=admin, tenant_id=t.pk, data=SinkInput(**{fields!r}))\n"
        + "print(json.dumps({'id': s.pk}))"
    )


def _sink_state(stack, sink_id: int) -> dict:
    return stack.json(
        "import json; from caisey import tenancy; from audit.selectors import all_sinks_status\n"
        f"s = [x for x in all_sinks_status() if x.id == {sink_id}][0]\n"
        "print(json.dumps({'lag': s.lag_records, 'error': s.last_error, 'cursor': s.cursor}))"
    )


def _check_complete(received: list[dict], journal: list[str]) -> None:
    ids = [r["event_id"] for r in received]
    assert set(ids) == set(journal), f"missing: {set(journal) - set(ids)}; unknown: {set(ids) - set(journal)}"
    # A resend is flagged by its event id (seen before), and arrives in the stream's order.
    seqs = [r["seq"] for r in received]
    first_seen = []
    seen: set[str] = set()
    for r in received:
        if r["event_id"] not in seen:
            seen.add(r["event_id"])
            first_seen.append(r["seq"])
    assert first_seen == sorted(first_seen)
    assert len(seqs) >= len(journal)


@pytest.mark.parametrize("stack", [FAST], indirect=True)
def test_rsyslog_restarted_mid_stream_loses_nothing(stack, rsyslog):
    stack.seed()
    _open_session(stack)
    _make_events(stack, 60, "before")
    sink = _sink(
        stack, name="rsyslog", kind="syslog_tcp", host="127.0.0.1", port=rsyslog.port, tls=False, allow_private=True
    )
    journal = _journal(stack)
    wait_for(
        lambda: {r["event_id"] for r in rsyslog.records()} >= set(journal), timeout=60, what="first records in rsyslog"
    )
    assert {r["category"] for r in rsyslog.records()} == {"transcript", "security"}

    rsyslog.stop()
    _make_events(stack, 120, "while-down")
    wait_for(lambda: _sink_state(stack, sink["id"])["error"], timeout=30, what="the sink to report the collector down")
    state = _sink_state(stack, sink["id"])
    assert state["lag"] >= 120
    rsyslog.start()
    _make_events(stack, 30, "after")
    journal = _journal(stack)
    wait_for(
        lambda: {r["event_id"] for r in rsyslog.records()} >= set(journal), timeout=90, what="every record in rsyslog"
    )
    _check_complete(rsyslog.records(), journal)
    wait_for(lambda: _sink_state(stack, sink["id"])["lag"] == 0, timeout=30, what="the sink caught up")
    assert _sink_state(stack, sink["id"])["error"] == ""


@pytest.mark.parametrize("stack", [FAST], indirect=True)
def test_https_receiver_and_a_worker_killed_mid_delivery_lose_nothing(stack, tmp_path):
    receiver = HttpsReceiver(tmp_path / "pki")
    try:
        stack.seed()
        _make_events(stack, 40, "first")
        ca = receiver.pki.ca_pem.read_text()
        _sink(stack, name="siem", kind="json_https", url=receiver.url, ca_pem=ca, allow_private=True)
        journal = _journal(stack)
        wait_for(lambda: {r["event_id"] for r in receiver.lines} >= set(journal), timeout=60, what="first lines")

        # The collector hangs: the worker is now inside a send, holding the sink's lease.
        receiver.mode = "hang"
        seen = receiver.requests
        _make_events(stack, 80, "during")
        wait_for(lambda: receiver.requests > seen, timeout=30, what="a send to the hanging collector")
        os.killpg(stack.worker.pid, signal.SIGKILL)
        stack.worker.wait(timeout=10)
        receiver.mode = "ok"
        _make_events(stack, 20, "after")
        stack.worker = stack.start_worker()
        journal = _journal(stack)
        wait_for(lambda: {r["event_id"] for r in receiver.lines} >= set(journal), timeout=90, what="every line")
        _check_complete(receiver.lines, journal)
    finally:
        receiver.stop()


@pytest.mark.parametrize("stack", [FAST], indirect=True)
def test_syslog_over_tls_to_rsyslog_verifies_its_certificate(stack, tmp_path):
    """RFC 5425: rsyslog's gtls driver with a test CA; the sink trusts that CA, a second sink
    without it is refused on the certificate and sends nothing."""
    if not Path(RSYSLOGD).exists() or not any(p.exists() for p in GTLS_DRIVER):
        pytest.skip("rsyslog or its TLS driver (rsyslog-gnutls) is not installed (bin/install-test-deps)")
    pki = make_pki(tmp_path / "pki", hosts=("localhost", "127.0.0.1"))
    rsyslog = Rsyslog(tmp_path / "rsyslog-tls", pki=pki)
    rsyslog.start()
    try:
        stack.seed()
        _open_session(stack)
        _make_events(stack, 20, "tls")
        common = {"kind": "syslog_tcp", "host": "localhost", "port": rsyslog.port, "tls": True, "allow_private": True}
        untrusted = _sink(stack, name="untrusted", **common)
        _sink(stack, name="trusted", ca_pem=pki.ca_pem.read_text(), **common)
        journal = _journal(stack)
        wait_for(
            lambda: {r["event_id"] for r in rsyslog.records()} >= set(journal), timeout=60, what="records over TLS"
        )
        _check_complete(rsyslog.records(), journal)
        wait_for(lambda: "certificate" in _sink_state(stack, untrusted["id"])["error"], timeout=30, what="refusal")
    finally:
        rsyslog.stop()
