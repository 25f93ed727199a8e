"""Built-in diagnostics and commands: one function per action kind of the catalogue.

Each function takes a :class:`Context` and returns an :class:`Outcome` with
structured JSON ``data`` and a human-readable ``text``. They are plain blocking
functions: the action runner calls them in a worker thread, never on the event
loop. They must not crash on a machine that lacks a tool: they raise
:class:`NotAvailable` (reported as a failed action whose error starts with
"not available on this endpoint:") or return ``Outcome(ok=False, error=...)``.

Subprocesses go through :meth:`Context.run`, which starts them in their own
process group and kills that group when the action is cancelled or times out.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from caisey_agent.policy import LocalPolicy

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")


class NotAvailable(Exception):
    """This diagnostic cannot run on this endpoint (missing tool, no systemd, other OS...)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not available on this endpoint: {what}")


class Cancelled(Exception):
    """The action was cancelled or timed out while the diagnostic ran."""


@dataclass
class Outcome:
    data: dict[str, Any]
    text: str
    ok: bool = True
    error: str = ""
    exit_code: int | None = None


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Context:
    params: dict[str, Any]
    policy: LocalPolicy
    deadline: float = field(default_factory=lambda: time.monotonic() + 60)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _procs: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- cancellation --------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def remaining(self, cap: float | None = None) -> float:
        left = max(0.05, self.deadline - time.monotonic())
        return min(left, cap) if cap is not None else left

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes up (and raises Cancelled) as soon as the action is cancelled or its time is up."""
        left = self.deadline - time.monotonic()
        if self.cancel_event.wait(max(0.0, min(seconds, left))) or seconds > left:
            raise Cancelled()

    def cancel(self) -> None:
        """Called from the event loop thread: stop the diagnostic and kill its subprocesses."""
        self.cancel_event.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            kill_process_tree(proc.pid)

    # --- subprocesses ------------------------------------------------------------

    def track(self, proc: subprocess.Popen) -> None:
        """Kill this process (and its group) when the action is cancelled or times out."""
        with self._lock:
            self._procs.add(proc)
        if self.cancel_event.is_set():
            kill_process_tree(proc.pid)

    def untrack(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def popen_kwargs(self) -> dict[str, Any]:
        if IS_WINDOWS:
            return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
        return {"start_new_session": True}

    def run(
        self, argv: list[str], *, timeout: float | None = None, what: str = "", env: dict | None = None
    ) -> Completed:
        """Run a tool and wait for it; NotAvailable when the tool is not installed."""
        self.check()
        exe = shutil.which(argv[0])
        if exe is None:
            raise NotAvailable(f"{what or argv[0]} ({argv[0]} is not installed)")
        kwargs = self.popen_kwargs()
        full_env = None
        if env is not None:
            full_env = {**os.environ, **env}
        proc = subprocess.Popen(
            [exe, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            **kwargs,
        )
        self.track(proc)
        try:
            try:
                out, err = proc.communicate(timeout=self.remaining(timeout))
            except subprocess.TimeoutExpired:
                kill_process_tree(proc.pid)
                proc.communicate()
                self.check()
                if time.monotonic() >= self.deadline:
                    raise Cancelled() from None  # the action's own timeout: the runner reports timed_out
                raise TimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
        finally:
            self.untrack(proc)
        self.check()
        return Completed(argv, proc.returncode, _text(out), _text(err))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def kill_process_tree(pid: int) -> None:
    """Kill a process started in its own group/session, with everything it started."""
    if IS_WINDOWS:
        from caisey_agent.diagnostics import windows

        windows.kill_tree(pid)
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


Diagnostic = Callable[[Context], Outcome]


def registry() -> dict[str, Diagnostic]:
    from caisey_agent.diagnostics import disks, ldap, logs, network, processes, services, system, windiag

    return {
        "system_summary": system.system_summary,
        "pending_reboot": system.pending_reboot,
        "service_status": services.service_status,
        "service_restart": services.service_restart,
        "log_errors": logs.log_errors,
        "file_tail": logs.file_tail,
        "disk_usage": disks.disk_usage,
        "top_processes": processes.top_processes,
        "listening_ports": processes.listening_ports,
        "network_config": network.network_config,
        "dns_resolve": network.dns_resolve,
        "tcp_connect": network.tcp_connect,
        "http_check": network.http_check,
        "event_log": windiag.event_log,
        "windows_update": windiag.windows_update,
        "defender_status": windiag.defender_status,
        "bitlocker_status": windiag.bitlocker_status,
        "registry_read": windiag.registry_read,
        "dc_health": windiag.dc_health,
        "iis_status": windiag.iis_status,
        "sql_server_check": windiag.sql_server_check,
        "ldap_check": ldap.ldap_check,
    }
