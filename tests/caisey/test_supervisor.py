"""The supervisor of `manage.py serve` with real child processes (tiny Python scripts)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from caisey.supervisor import EXIT_FAILED, EXIT_STOPPED, Child, Supervisor, listen_socket

# Appends "<name> <event> <monotonic time>" to the file in argv[2]; SIGTERM is recorded, then it exits
# (or, with argv[3] == "stuck", ignored).
CHILD = """
import signal, sys, time
name, path = sys.argv[1], sys.argv[2]
def note(event):
    with open(path, "a") as f:
        f.write(f"{name} {event} {time.monotonic()}\\n")
def on_term(signum, frame):
    note("term")
    if sys.argv[3:] != ["stuck"]:
        time.sleep(0.2)
        note("exit")
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("start")
while True:
    time.sleep(0.05)
"""


def child(name: str, stage: int, notes, *extra: str) -> Child:
    return Child(name, [sys.executable, "-c", CHILD, name, str(notes), *extra], stage)


def supervisor(children, tmp_path, **kw) -> Supervisor:
    kw = {"backoff_base": 0.05, "healthy_after": 60.0, "stop_timeout": 5.0, "poll_interval": 0.05, **kw}
    return Supervisor(children, env=dict(os.environ), cwd=tmp_path, **kw)


def events(notes) -> list[tuple[str, str, float]]:
    if not notes.exists():
        return []
    lines = (line.split() for line in notes.read_text().splitlines())
    return [(n, e, float(t)) for n, e, t in (parts for parts in lines if len(parts) == 3)]  # not one half written


def stop_when(sup: Supervisor, condition, timeout: float = 20.0) -> threading.Thread:
    """Ask the supervisor to stop (as its SIGTERM handler does) once ``condition()`` holds."""

    def watch():
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not condition():
                time.sleep(0.05)
        finally:
            sup._request_stop(signal.SIGTERM, None)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_child_that_keeps_failing_is_restarted_with_backoff_then_given_up_on(tmp_path):
    failing = Child("bad", [sys.executable, "-c", "import sys; sys.exit(3)"], 0)
    notes = tmp_path / "notes"
    good = child("good", 1, notes)
    sup = supervisor([failing, good], tmp_path, max_failures=4)
    t0 = time.monotonic()
    assert sup.run() == EXIT_FAILED
    assert len(failing.pids) == 4  # started, then restarted three times
    assert "bad exited with status 3" in sup.failure and "giving up" in sup.failure
    # Backoff 0.05 + 0.1 + 0.2 s between the four starts.
    assert time.monotonic() - t0 >= 0.35
    # The healthy child was stopped cleanly on the way out, and nothing is left running.
    assert [e for n, e, _ in events(notes)] == ["start", "term", "exit"]
    assert good.proc is None and failing.proc is None


def test_a_killed_child_is_restarted_and_a_stop_goes_stage_by_stage(tmp_path):
    notes = tmp_path / "notes"
    first, second, third = child("daphne", 0, notes), child("beat", 1, notes), child("worker", 2, notes)
    sup = supervisor([third, second, first], tmp_path)  # started in any order, stopped by stage

    killed = []

    def killed_and_back() -> bool:
        if not killed and sum(1 for n, e, _ in events(notes) if e == "start") == 3:
            os.kill(first.pids[0], signal.SIGKILL)
            killed.append(first.pids[0])
        return len(first.pids) == 2 and sum(1 for n, e, _ in events(notes) if e == "start") == 4

    stop_when(sup, killed_and_back)
    assert sup.run() == EXIT_STOPPED
    assert first.restarts == 1 and len(first.pids) == 2
    stops = [(n, e, t) for n, e, t in events(notes) if e in ("term", "exit")]
    assert [(n, e) for n, e, _ in stops] == [
        ("daphne", "term"),
        ("daphne", "exit"),
        ("beat", "term"),
        ("beat", "exit"),
        ("worker", "term"),
        ("worker", "exit"),
    ]
    for pid in first.pids + second.pids + third.pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"pid {pid} still runs")


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path):
    notes = tmp_path / "notes"
    stuck = child("stuck", 0, notes, "stuck")
    sup = supervisor([stuck], tmp_path, stop_timeout=0.5)
    stop_when(sup, lambda: events(notes))
    t0 = time.monotonic()
    assert sup.run() == EXIT_STOPPED
    assert 0.5 <= time.monotonic() - t0 < 5
    assert [e for _, e, _ in events(notes)] == ["start", "term"]  # it never exited by itself
    try:
        os.kill(stuck.pids[0], 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the stuck child still runs")


def test_the_listening_socket_refuses_ipv6_and_a_port_in_use(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="IPv4"):
        listen_socket("::1", 0)
    sock = listen_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_gated_children_start_once_the_gate_opens_and_the_others_at_once(tmp_path):
    """`serve` gates the Celery worker and beat on a Daphne answering, so that they do not compete
    with it for the CPU while it starts (caisey/management/commands/serve.py)."""
    notes = tmp_path / "notes"
    daphne = child("daphne", 0, notes)
    worker = Child("worker", child("worker", 2, notes).argv, 2, gated=True)
    gate = threading.Event()
    asked = []

    def start_gate() -> bool:
        asked.append(sorted(n for n, e, _ in events(notes) if e == "start"))
        return gate.is_set()

    def open_once_asked_with_daphne_up() -> bool:
        if ["daphne"] in asked:
            gate.set()
        return {n for n, e, _ in events(notes) if e == "start"} == {"daphne", "worker"}

    sup = supervisor([daphne, worker], tmp_path, start_gate=start_gate)
    stop_when(sup, open_once_asked_with_daphne_up)
    assert sup.run() == EXIT_STOPPED
    # While the gate was closed the gated child had not started; then it did.
    assert ["daphne"] in asked
    starts = [n for n, e, _ in events(notes) if e == "start"]
    assert starts == ["daphne", "worker"]


def test_a_gate_that_never_opens_starts_the_gated_children_after_its_timeout(tmp_path):
    notes = tmp_path / "notes"
    worker = Child("worker", child("worker", 2, notes).argv, 2, gated=True)
    sup = supervisor([worker], tmp_path, start_gate=lambda: False, gate_timeout=0.3)
    stop_when(sup, lambda: events(notes))
    assert sup.run() == EXIT_STOPPED
    assert [n for n, e, _ in events(notes) if e == "start"] == ["worker"]
