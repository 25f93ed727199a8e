"""nginx as the TLS-terminating proxy in front of a stack's Daphne, with a test CA (tests/tls.py).

nginx comes from Debian's packages (bin/install-test-deps installs it for CI). It connects to
Daphne from its own loopback address (``proxy_bind``), so the server can tell the proxy from the
clients: only that address is in CAISEY_TRUSTED_PROXIES."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.stack import free_port, wait_for
from tests.tls import TestPKI, make_pki

PROXY_ADDRESS = "127.0.0.9"  # what Daphne sees nginx connect from

CONFIG = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
{user}
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy_address};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx, or a skip where it is not installed; CI (CAISEY_NGINX_REQUIRED=1) fails instead."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found is None:
        message = "nginx is not installed (bin/install-test-deps installs it)"
        if os.environ.get("CAISEY_NGINX_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


class TLSProxy:
    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki: TestPKI = make_pki(self.dir / "pki")
        self.port = free_port()
        (self.dir / "nginx.conf").write_text(
            CONFIG.format(
                dir=self.dir,
                user="user root;" if os.geteuid() == 0 else "",
                port=self.port,
                upstream=upstream_port,
                proxy_address=PROXY_ADDRESS,
                cert=self.pki.cert_pem,
                key=self.pki.key_pem,
            )
        )
        binary = nginx_binary()
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "ab"),
            start_new_session=True,
        )
        wait_for(lambda: self.proc.poll() is not None or self._listening(), timeout=30, what="nginx listening")
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited: {(self.dir / 'error.log').read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _listening(self) -> bool:
        import socket

        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(
            f"----- nginx {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.dir.glob("*.log")) if p.is_file()
        )
