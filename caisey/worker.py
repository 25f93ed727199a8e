"""How Caisey runs its Celery worker with the beat scheduler in one process, wherever it is
started: bin/demo and the tests' stacks use `celery_worker_argv`; docker-compose.yml runs the
worker and beat as separate services with the same app (`-A caisey`)."""

from __future__ import annotations

from pathlib import Path


def celery_worker_argv(python: str, *, schedule: Path, concurrency: int) -> list[str]:
    """A worker that also runs the periodic sweeps (`-B`), keeping beat's schedule file in
    ``schedule`` (a path of the caller's data or test folder)."""
    return [
        python,
        "-m",
        "celery",
        "-A",
        "caisey",
        "worker",
        "-B",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--schedule",
        str(schedule),
    ]
