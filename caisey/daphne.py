"""How Caisey runs Daphne, wherever it is started: `manage.py serve` (bin/demo, docker-compose.yml,
the systemd unit, the benchmark) and the tests' stacks use `daphne_argv`.

`python -m caisey.daphne` is Daphne's own command line with one change: its access log redacts
share, approval and enrollment tokens from the paths it writes (caisey/redact.py)."""

from __future__ import annotations

from daphne.cli import CommandLineInterface
from daphne.server import Server

from caisey.redact import redact_tokens

DAPHNE_OPTIONS = [
    # Agents' heartbeats (60 s lazy) keep their sockets busy: Daphne need not ping them too.
    "--ping-interval",
    "90",
    # After a restart every agent reconnects at once and handshakes queue for seconds; Daphne's
    # default (5 s) would refuse them and start their backoff over. Waiting is cheaper.
    "--websocket_connect_timeout",
    "30",
    # No --proxy-headers: Daphne would believe X-Forwarded-For from anyone. The trusted proxies'
    # headers are read by caisey/proxies.py instead.
]


def daphne_argv(
    python: str,
    *,
    host: str | None = None,
    port: int | None = None,
    fd: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """Listening on ``host``:``port``, or on the inherited listening socket ``fd`` (`manage.py
    serve` runs several Daphne processes on one socket: caisey/supervisor.py)."""
    if (fd is None) == (host is None or port is None):
        raise ValueError("give either host and port, or fd")
    bind = ["--fd", str(fd)] if fd is not None else ["-b", str(host), "-p", str(port)]
    return [python, "-m", "caisey.daphne", *bind, *DAPHNE_OPTIONS, *(extra or []), "caisey.asgi:application"]


class RedactingServer(Server):
    def log_action(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact_tokens(details["path"])}
        super().log_action(protocol, action, details)


class CaiseyDaphne(CommandLineInterface):
    server_class = RedactingServer


if __name__ == "__main__":
    CaiseyDaphne.entrypoint()
