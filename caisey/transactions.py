"""Transactions that PostgreSQL may abort to break a deadlock or a serialization conflict.

Such an abort is nobody's mistake: two writers met in an order the database could not
serialise. The whole transaction is rolled back (its on-commit doorbells with it), so running
it again from the start is safe. ``retrying_atomic`` does that, a few times with a short
jittered pause, and only for the outermost transaction: inside another one there is nothing to
retry (the caller's transaction is aborted as a whole), so the error goes up unchanged.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, transaction

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL's SQLSTATEs for "try again": deadlock_detected, serialization_failure.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES


def retrying_atomic(attempts: int = 4) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function in its own transaction; rerun it when the database aborted it to break
    a deadlock or a serialization conflict."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if transaction.get_connection().in_atomic_block:
                with transaction.atomic():
                    return func(*args, **kwargs)
            for attempt in range(1, attempts + 1):
                try:
                    with transaction.atomic():
                        return func(*args, **kwargs)
                except OperationalError as exc:
                    if attempt == attempts or not is_retryable(exc):
                        raise
                    log.warning(
                        "%s: %s; running it again (attempt %d of %d)", func.__name__, exc, attempt + 1, attempts
                    )
                    time.sleep(random.uniform(0, 0.05 * 2**attempt))
            raise AssertionError("unreachable")

        return wrapper

    return decorate
