"""How Caisey runs its Celery worker and beat, wherever they are started: `manage.py serve` runs
the worker and beat as two processes (caisey/supervisor.py); the tests' stacks run the worker
with beat embedded (`-B`)."""

from __future__ import annotations

from pathlib import Path


def celery_worker_argv(python: str, *, schedule: Path | None, concurrency: int) -> list[str]:
    """A worker; with a ``schedule`` (a path of the caller's data or test folder for beat's
    schedule file) it also runs the periodic sweeps (`-B`)."""
    beat = ["-B", "--schedule", str(schedule)] if schedule is not None else []
    return [python, "-m", "celery", "-A", "caisey", "worker", *beat, "--loglevel=INFO", f"--concurrency={concurrency}"]


def celery_beat_argv(python: str, *, schedule: Path) -> list[str]:
    """Beat alone: it schedules the periodic sweeps for the workers. Exactly one per installation:
    two would schedule every sweep twice."""
    return [python, "-m", "celery", "-A", "caisey", "beat", "--loglevel=INFO", "--schedule", str(schedule)]
