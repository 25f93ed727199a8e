"""`manage.py serve`: the whole server on this machine, supervised.

N Daphne processes accepting on one listening socket (the kernel hands each new connection,
agent or console, to one of them), the Celery worker and Celery beat. A child that dies is logged
and restarted with backoff; SIGTERM or Ctrl-C stops the Daphne processes first, then beat, then
the worker (caisey/supervisor.py). Runs in the foreground: systemd (deploy/caisey-server.service),
docker-compose.yml and bin/demo start it. Migrations are not applied here (`manage.py migrate`).

Exit status: 0 stopped on request; 1 a child kept failing, or the socket could not be bound;
2 bad arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from caisey import embedded_redis
from caisey.daphne import daphne_argv
from caisey.env import env_int
from caisey.supervisor import Child, Supervisor, listen_socket
from caisey.worker import celery_beat_argv, celery_worker_argv

STAGE_DAPHNE, STAGE_BEAT, STAGE_WORKER = 0, 1, 2


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """CAISEY_SERVE_WORKERS, else one Daphne process per core this process may use."""
    return env_int("CAISEY_SERVE_WORKERS", 0) or cores()


def metrics_dir(env: dict[str, str]) -> tuple[Path, bool]:
    """prometheus_client's multiprocess folder: the counters of every process, summed by whichever
    process answers /metrics (bridge/prometheus.py). Emptied at start, as the library requires.
    Returns the folder and whether this run made it (and removes it at the end)."""
    given = env.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return folder, False
    return Path(tempfile.mkdtemp(prefix="caisey-metrics-")), True


def _answers(sock) -> bool:
    """A Daphne process answers on the shared socket: any HTTP answer counts (a production
    CAISEY_ALLOWED_HOSTS may not name 127.0.0.1, and Django then answers 400)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # refused, or still waiting in the backlog
        return False


class Command(BaseCommand):
    help = (
        "Run the server: N Daphne processes sharing one listening socket, the Celery worker and "
        "beat, supervised (a child that dies is restarted with backoff). SIGTERM/Ctrl-C stops all."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help=f"Daphne processes (default: CAISEY_SERVE_WORKERS, else one per core: {cores()} here)",
        )
        parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
        parser.add_argument(
            "--celery-concurrency", type=int, default=2, help="Celery worker pool processes (default 2)"
        )
        parser.add_argument(
            "--no-beat", action="store_true", help="no Celery beat here (another machine runs the one beat)"
        )
        parser.add_argument(
            "--no-celery", action="store_true", help="no Celery worker or beat here (they run elsewhere)"
        )
        parser.add_argument("--log-dir", type=Path, help="write each child's output to <log-dir>/<name>.log")
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="seconds each stage gets after SIGTERM before SIGKILL (default 20)",
        )
        parser.add_argument("--daphne-arg", action="append", default=[], help="extra Daphne argument (repeatable)")

    def handle(self, *args, **opts):
        if opts["workers"] is None:
            opts["workers"] = default_workers()
        if opts["workers"] < 1:
            raise CommandError("--workers must be at least 1", returncode=2)
        if opts["celery_concurrency"] < 1:
            raise CommandError("--celery-concurrency must be at least 1", returncode=2)
        data_dir: Path = settings.DATA_DIR
        if opts["log_dir"] is not None:
            opts["log_dir"].mkdir(parents=True, exist_ok=True)
        try:
            sock = listen_socket(opts["host"], opts["port"])
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot listen on {opts['host']}:{opts['port']}: {exc}") from None
        redis_started = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        metrics, made_metrics = metrics_dir(env)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        py = sys.executable
        try:
            if settings.EMBEDDED_REDIS:
                try:
                    redis_started = embedded_redis.ensure_running(data_dir)
                except Exception as exc:  # noqa: BLE001 - any failure to start it is the same message
                    raise CommandError(f"the embedded Redis did not start: {exc}") from None
            fd = sock.fileno()
            children = [
                Child(f"daphne-{i}", daphne_argv(py, fd=fd, extra=opts["daphne_arg"]), STAGE_DAPHNE, pass_fds=(fd,))
                for i in range(opts["workers"])
            ]
            schedule = data_dir / "celerybeat-schedule"
            if not opts["no_celery"]:
                concurrency = opts["celery_concurrency"]
                # Gated: they start once a Daphne process answers (or after 30 s regardless), so they
                # do not compete with the Daphne processes for the CPU while those import Django.
                # `serve --workers 2` to the first /healthz answer on the 2-core machine, load 3-7,
                # 13 alternating runs each (2026-12-05): median 8.0 s (4.2-14.9) all started at once,
                # 6.9 s (3.2-9.8) gated. Celery takes no connections: only the sweeps start later.
                worker = celery_worker_argv(py, schedule=None, concurrency=concurrency)
                children.append(Child("celery-worker", worker, STAGE_WORKER, gated=True))
                if not opts["no_beat"]:
                    beat = celery_beat_argv(py, schedule=schedule)
                    children.append(Child("celery-beat", beat, STAGE_BEAT, gated=True))
            supervisor = Supervisor(
                children,
                env=env,
                cwd=settings.BASE_DIR,
                log_dir=opts["log_dir"],
                stop_timeout=opts["stop_timeout"],
                on_exit=lambda child, pid: _mark_dead(metrics, pid),
                # Our copy of the socket goes first: once the Daphne processes have let go of theirs,
                # a client is refused at once (and retries) instead of waiting in a backlog no one reads.
                on_stop=sock.close,
                start_gate=lambda: _answers(sock),
            )
            self.stdout.write(
                f"Serving on http://{opts['host']}:{opts['port']}/ with {opts['workers']} Daphne "
                f"process{'es' if opts['workers'] != 1 else ''}"
                + ("" if opts["no_celery"] else ", the Celery worker" + ("" if opts["no_beat"] else " and beat"))
                + f" (pid {os.getpid()}; SIGTERM or Ctrl-C stops all)"
            )
            self.stdout.flush()
            status = supervisor.run()
        finally:
            sock.close()
            if redis_started:
                embedded_redis.stop(data_dir)
            if made_metrics:
                shutil.rmtree(metrics, ignore_errors=True)
        if status != 0:
            raise CommandError(supervisor.failure or "a child kept failing", returncode=status)
        self.stdout.write("Stopped.")


def _mark_dead(folder: Path, pid: int) -> None:
    """A dead process's live gauges are dropped; its counters stay in the sums (they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))
