"""Collectors the audit tests start: a syslog receiver over TCP (octet-counted frames, optional
TLS) and an HTTPS JSON-lines receiver, each in threads of the test process, each able to
misbehave on command."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.tls import make_pki


def read_frames(data: bytes) -> list[bytes]:
    """Split RFC 6587 octet-counted frames; a trailing partial frame is dropped (it was cut)."""
    frames = []
    while data:
        length, sep, rest = data.partition(b" ")
        if not sep or not length.isdigit() or len(rest) < int(length):
            break
        frames.append(rest[: int(length)])
        data = rest[int(length) :]
    return frames


class SyslogReceiver:
    """Accepts connections, reads each to its end, keeps the frames; ``mode`` "ok", "hang" (reads
    nothing and never closes) or "reset" (resets the connection at once, reading nothing)."""

    def __init__(self, *, tls_folder: Path | None = None, port: int = 0) -> None:
        self.frames: list[bytes] = []
        self.mode = "ok"
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.pki = make_pki(tls_folder) if tls_folder else None
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        if self.mode == "reset":
            # A linger of 0 makes close() send RST. A plain close() sends FIN when our frames have
            # not arrived yet, and FIN is what a collector that read everything sends too: the
            # sender then counts the batch as read (TCP syslog has no acknowledgement; CI on
            # 2026-12-05 saw "Test record sent" here once). A reset is what this mode is for.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        if self.mode == "hang":
            self._stop.wait()
            conn.close()
            return
        try:
            if self.pki:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self.pki.cert_pem, self.pki.key_pem)
                conn = context.wrap_socket(conn, server_side=True)
            conn.settimeout(10)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            with self._lock:
                self.frames += read_frames(data)
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn = conn.unwrap()
                except (ssl.SSLError, OSError):
                    pass
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


class HttpsReceiver:
    """An HTTPS server taking JSON-lines POSTs; ``mode`` "ok", "500", "redirect", "hang",
    "close" (closes mid-response) or "huge" (answers 200 with a large body)."""

    def __init__(self, folder: Path, *, port: int = 0) -> None:
        self.pki = make_pki(folder)
        self.lines: list[dict] = []
        self.mode = "ok"
        self.requests = 0
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                receiver.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                if mode == "hang":
                    receiver._release.wait(30)
                    return
                if mode == "close":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "redirect":
                    self.send_response(307)
                    self.send_header("Location", "https://example.invalid/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.lines += [json.loads(line) for line in body.decode().splitlines() if line]
                answer = b"x" * (8 * 1024 * 1024) if mode == "huge" else b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.cert_pem, self.pki.key_pem)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/ingest"

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
