"""One error vocabulary for the whole application.

Every error a service raises on purpose is an ``AppError`` of one of two kinds:

- ``Rejected``: the request is wrong or not allowed (bad input, a revoked endpoint, a
  viewer trying to change something). Asking again the same way gets the same answer.
  ``Forbidden`` is the "not allowed" flavour.
- ``Conflict``: the request was fine but the world moved (a race with another process, a
  transition the object's state no longer allows). Reloading and deciding again may work.

The message is for the person who asked: a technician reads it on a console page, a
script reads it in the API's ``detail``. Errors are mapped to HTTP here and nowhere else
(``http_status``); the API's exception handler and the console's error middleware both
use it, so no domain error can become a 500.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from caisey.transactions import is_retryable

ErrorKind = Literal["rejected", "conflict"]


class AppError(Exception):
    """Base of every error the application raises on purpose."""

    kind: ClassVar[ErrorKind]
    #: Machine-readable code in the API's ``{"error": code, "detail": message}``; a subclass may
    #: set it (and the status) per instance where one error class carries several codes.
    code: str = "error"
    status: int = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Rejected(AppError):
    """Bad input, or an action that is not allowed in this state for this caller."""

    kind = "rejected"
    code = "rejected"
    status = 400


class Forbidden(Rejected):
    """The caller may not do this at all (role, tenant, ownership)."""

    code = "forbidden"
    status = 403


class Conflict(AppError):
    """A race with another writer, or an illegal move of a state machine."""

    kind = "conflict"
    code = "conflict"
    status = 409


def app_error(exc: BaseException) -> AppError | None:
    """``exc`` in this vocabulary, or None (an unexpected error: a 500). A transaction the database
    aborted to break a deadlock or a serialization conflict is a Conflict: nothing was written and
    asking again works (caisey.transactions)."""
    if isinstance(exc, AppError):
        return exc
    if is_retryable(exc):
        return Conflict("another change crossed this one at the same moment; nothing was written, try again")
    return None


def http_status(exc: AppError) -> int:
    """The HTTP status of an application error: the one mapping, used by API and console."""
    return exc.status
