"""retrying_atomic: a transaction the database aborted to break a deadlock runs again."""

from __future__ import annotations

import pytest
from django.db import OperationalError, transaction

from caisey.transactions import is_retryable, retrying_atomic

pytestmark = pytest.mark.django_db(transaction=True)


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _aborted(sqlstate: str) -> OperationalError:
    try:
        raise OperationalError("deadlock detected") from _PgError(sqlstate)
    except OperationalError as exc:
        return exc


def test_deadlock_and_serialization_failures_are_retryable_others_not():
    assert is_retryable(_aborted("40P01")) and is_retryable(_aborted("40001"))
    assert not is_retryable(_aborted("23505")) and not is_retryable(OperationalError("database is locked"))


def test_an_aborted_transaction_runs_again_from_the_start():
    calls = []

    @retrying_atomic()
    def work() -> str:
        calls.append(transaction.get_connection().in_atomic_block)
        if len(calls) < 3:
            raise _aborted("40P01")
        return "done"

    assert work() == "done"
    assert calls == [True, True, True]  # each attempt in a transaction of its own


def test_gives_up_after_its_attempts_and_never_retries_other_errors():
    calls = []

    @retrying_atomic(attempts=2)
    def always_deadlocks() -> None:
        calls.append(1)
        raise _aborted("40P01")

    with pytest.raises(OperationalError):
        always_deadlocks()
    assert len(calls) == 2

    @retrying_atomic()
    def broken() -> None:
        calls.append(2)
        raise _aborted("23505")

    with pytest.raises(OperationalError):
        broken()
    assert calls.count(2) == 1


def test_inside_another_transaction_there_is_nothing_to_retry():
    calls = []

    @retrying_atomic()
    def work() -> None:
        calls.append(1)
        raise _aborted("40P01")

    with pytest.raises(OperationalError), transaction.atomic():
        work()
    assert calls == [1]


def test_an_aborted_transaction_that_reaches_a_view_is_a_conflict_in_the_one_error_mapping():
    from rest_framework.test import APIRequestFactory

    from caisey.api import exception_handler
    from caisey.errors import Conflict, app_error

    crossed = app_error(_aborted("40P01"))
    assert isinstance(crossed, Conflict) and "try again" in str(crossed)
    assert app_error(_aborted("23505")) is None and app_error(RuntimeError("bug")) is None  # still a 500
    response = exception_handler(_aborted("40001"), {"request": APIRequestFactory().post("/api/v1/x")})
    assert response.status_code == 409 and response.data["error"] == "conflict"
