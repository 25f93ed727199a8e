"""Typed hooks endpoints offers to the layers above it.

endpoints imports neither bridge nor sessions_app, yet revoking an endpoint must close its
live agent connection, which only the bridge can do. Two ways were possible: every caller
of ``endpoint_revoke`` rings the bridge itself, or endpoints offers a hook the bridge
registers once. The hook it is: ``endpoint_revoke`` is called from endpoints' own admin
(which may not import the bridge) as well as from console views, and a caller that forgot
to ring would leave a revoked agent connected. A hook registered in the bridge's
``ready()`` cannot be forgotten, and unlike a Django signal it is typed, explicit and
registered once per function.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

RevokedHook = Callable[[uuid.UUID], None]
_revoked: list[RevokedHook] = []


def on_endpoint_revoked(func: RevokedHook) -> RevokedHook:
    """Register ``func(endpoint_id)``, called after the commit that revoked the endpoint."""
    if func not in _revoked:
        _revoked.append(func)
    return func


def endpoint_revoked_hooks() -> list[RevokedHook]:
    return list(_revoked)


ReenrolledHook = Callable[[uuid.UUID], None]
_reenrolled: list[ReenrolledHook] = []


def on_endpoint_reenrolled(func: ReenrolledHook) -> ReenrolledHook:
    """Register ``func(endpoint_id)``, called INSIDE the transaction that re-enrolled the endpoint
    (``--replace``: a new credential): a record it writes commits or rolls back with the change;
    what must wait for the commit (closing the old socket) uses ``transaction.on_commit``."""
    if func not in _reenrolled:
        _reenrolled.append(func)
    return func


def endpoint_reenrolled_hooks() -> list[ReenrolledHook]:
    return list(_reenrolled)


# A person's sign-in changed (logged out, deactivated, password changed or reset): their open
# console sockets re-check their session and close if it is no longer good (the bridge's hook).
SignInChangedHook = Callable[[int], None]
_sign_in_changed: list[SignInChangedHook] = []


def on_sign_in_changed(func: SignInChangedHook) -> SignInChangedHook:
    """Register ``func(user_id)``, called after the commit that changed the person's sign-in."""
    if func not in _sign_in_changed:
        _sign_in_changed.append(func)
    return func


def sign_in_changed_hooks() -> list[SignInChangedHook]:
    return list(_sign_in_changed)
