"""Run the server's processes and keep them running: `manage.py serve` (caisey/management/commands/serve.py).

Plain processes, no Django: a child is an argv. Each child runs in a process group of its own (so
a signal to it reaches what it forks: Celery's pool) and dies with the supervisor (Linux
PR_SET_PDEATHSIG), so a killed supervisor leaves nothing holding the port. A child that exits
while the supervisor runs is logged and started again after a backoff (1, 2, 4 ... s, capped); one
that keeps failing (``max_failures`` exits in a row, none after running ``healthy_after`` seconds)
makes the supervisor stop everything and exit 1, so systemd or Docker see the failure.
SIGTERM, SIGINT or SIGHUP stop the children by stage, in order (lower stages first: the Daphne
processes, then Celery beat, then the worker), each stage given ``stop_timeout`` seconds before
SIGKILL. Exit status: 0 stopped on request, 1 a child kept failing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("caisey.serve")

EXIT_STOPPED = 0
EXIT_FAILED = 1


@dataclass
class Child:
    name: str
    argv: list[str]
    stage: int  # stop order: the lowest stage stops first
    pass_fds: tuple[int, ...] = ()
    gated: bool = False  # started once the supervisor's start gate opens (see Supervisor)
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # exits in a row, each before it ran healthy_after seconds
    restart_at: float | None = None
    restarts: int = 0
    pids: list[int] = field(default_factory=list)  # every pid it ran as


def listen_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """The one listening TCP socket every Daphne process accepts on (the kernel hands each new
    connection to one of them). SO_REUSEADDR as Daphne sets it; the backlog absorbs a reconnect
    storm (the kernel caps it at net.core.somaxconn)."""
    if ":" in host:
        # Daphne's --fd adopts the socket as AF_INET (its fd endpoint takes no address family).
        raise ValueError(f"{host}: serve binds IPv4 addresses only; put an IPv6 proxy in front")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        env: dict[str, str],
        cwd: str | Path,
        log_dir: Path | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        healthy_after: float = 30.0,
        max_failures: int = 5,
        stop_timeout: float = 20.0,
        on_exit: Callable[[Child, int], None] | None = None,
        on_stop: Callable[[], None] | None = None,
        poll_interval: float = 0.2,
        start_gate: Callable[[], bool] | None = None,
        gate_timeout: float = 30.0,
    ) -> None:
        """``start_gate``: the ``gated`` children start once it returns True (asked every poll), or
        after ``gate_timeout`` seconds whatever it says; the others start at once."""
        self.children = children
        self.env = env
        self.cwd = cwd
        self.log_dir = log_dir
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_after = healthy_after
        self.max_failures = max_failures
        self.stop_timeout = stop_timeout
        self.on_exit = on_exit
        self.on_stop = on_stop
        self.poll_interval = poll_interval
        self.start_gate = start_gate
        self.gate_timeout = gate_timeout
        self.stop_signal: int | None = None
        self.failure: str | None = None

    # --- running ----------------------------------------------------------------------

    def spawn(self, child: Child) -> None:
        output = None
        if self.log_dir is not None:
            output = open(self.log_dir / f"{child.name}.log", "ab")  # the child keeps its own copy
        try:
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=self.env,
                cwd=self.cwd,
                pass_fds=child.pass_fds,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output is not None:
                output.close()
        child.started_at = time.monotonic()
        child.restart_at = None
        child.pids.append(child.proc.pid)
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _request_stop(self, signum, frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # nohup asks to survive the terminal
            signal.signal(signal.SIGHUP, self._request_stop)

    def run(self) -> int:
        """Start every child, watch them until a stop signal or a child that keeps failing, then
        stop them in order. Returns the exit status."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.install_signal_handlers()
        try:
            waiting = [c for c in self.children if c.gated and self.start_gate is not None]
            for child in self.children:
                if self.stop_signal is not None:
                    break
                if child not in waiting:
                    self.spawn(child)
            gate_deadline = time.monotonic() + self.gate_timeout
            while self.stop_signal is None and self.failure is None:
                if waiting and (time.monotonic() >= gate_deadline or self.start_gate()):
                    for child in waiting:
                        self.spawn(child)
                    waiting = []
                self.check()
                time.sleep(self.poll_interval)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the clean-up is bounded anyway
                signal.signal(sig, signal.SIG_IGN)
            if self.stop_signal is not None:
                log.info("%s received: stopping", signal.Signals(self.stop_signal).name)
            if self.on_stop is not None:
                self.on_stop()
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failure is not None:
            log.error("stopped: %s", self.failure)
            return EXIT_FAILED
        return EXIT_STOPPED

    def check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    self._exited(child, code, now)
            elif child.restart_at is not None and now >= child.restart_at:
                self.spawn(child)

    def _exited(self, child: Child, code: int, now: float) -> None:
        pid, ran = child.proc.pid, now - child.started_at
        child.proc = None
        self._reap_group(pid)
        if self.on_exit is not None:
            self.on_exit(child, pid)
        if ran >= self.healthy_after:
            child.failures = 0
        child.failures += 1
        if child.failures >= self.max_failures:
            self.failure = (
                f"{child.name} {describe_exit(code)} after {ran:.1f} s, its {child.failures}th failure in a row "
                f"(none ran {self.healthy_after:.0f} s); giving up"
            )
            log.error("%s (pid %d) %s", child.name, pid, self.failure)
            return
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (child.failures - 1))
        child.restart_at = now + delay
        child.restarts += 1
        log.warning(
            "%s (pid %d) %s after %.1f s; restarting it in %.0f s (failure %d of %d in a row)",
            child.name,
            pid,
            describe_exit(code),
            ran,
            delay,
            child.failures,
            self.max_failures,
        )

    @staticmethod
    def _reap_group(pid: int) -> None:
        """What a dead child left in its process group (Celery's pool) goes too."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    # --- stopping ---------------------------------------------------------------------

    def stop_all(self) -> None:
        for stage in sorted({c.stage for c in self.children}):
            group = [c for c in self.children if c.stage == stage]
            for child in group:
                child.restart_at = None
            running = [c for c in group if c.proc is not None and c.proc.poll() is None]
            for child in running:
                self._signal(child, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            for child in running:
                proc = child.proc
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    log.info("stopped %s (pid %d): %s", child.name, proc.pid, describe_exit(proc.returncode))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "%s (pid %d) still running %.0f s after SIGTERM: killing it",
                        child.name,
                        proc.pid,
                        self.stop_timeout,
                    )
            for child in group:
                if child.proc is None:
                    continue
                self._signal(child, signal.SIGKILL)  # stragglers in its group, and a stuck child
                child.proc.wait()
                child.proc = None

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)  # start_new_session made it its group's leader
        except (ProcessLookupError, PermissionError):
            pass
