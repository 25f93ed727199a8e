"""A webhook receiver for tests: a real HTTP server on a loopback port, in a thread of the test,
that checks each request's signature with the destination's secret and misbehaves on command.

``script`` is a list of behaviours taken one per request (then ``default``): "ok" (204), "500",
"redirect" (302 to elsewhere), "hang" (accept, read, never answer until stopped), "drip" (a
status line, then a header byte per half second), "huge" (200 and an endless body), "close"
(half a status line, then the connection closed).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from integrations import signing


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    behaviour: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str = ""
    default: str = "ok"
    script: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def next_behaviour(self) -> str:
        return self.script.pop(0) if self.script else self.default

    def delivered_ids(self) -> list[str]:
        """Event ids of the requests answered 2xx with a good signature."""
        return [r.json["id"] for r in self.received if r.signature_ok and r.behaviour == "ok"]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                behaviour = receiver.next_behaviour()
                ok = signing.verify(receiver.secret, self.headers.get(signing.HEADER, ""), body)
                receiver.received.append(Received(dict(self.headers), body, ok, behaviour))
                if behaviour == "ok":
                    self.send_response(204 if ok else 401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif behaviour == "500":
                    self._answer(500, b"boom")
                elif behaviour == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif behaviour == "hang":
                    receiver.stopping.wait()
                elif behaviour == "drip":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while not receiver.stopping.wait(0.5):
                        try:
                            self.wfile.write(b"X")
                            self.wfile.flush()
                        except OSError:
                            return
                elif behaviour == "huge":
                    self.send_response(200)
                    self.end_headers()  # no length: the body runs until the connection closes
                    chunk = b"x" * 65536
                    try:
                        while not receiver.stopping.is_set():
                            self.wfile.write(chunk)
                    except OSError:
                        return
                elif behaviour == "close":
                    self.wfile.write(b"HTTP/1.1 2")
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition (the receiver's threads record asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
