"""Who did it: the typed vocabulary of actors that services take and transcripts record.

A service's ``actor`` is either a person (a Django user: technician, tenant admin, or an
operator on the command line) or one of the system parties below. Nothing else: not a
free string, not None. ``actor_label`` is how every record names them ("user:alice",
"agent", "system").
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, TypeAlias

from caisey.errors import Forbidden

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class Party(StrEnum):
    """Actors that are not a signed-in person."""

    SYSTEM = "system"  # sweeps, deadlines, bookkeeping the product does on its own
    AGENT = "agent"  # the endpoint's agent reported it
    BRIDGE = "bridge"  # the transport decided it (delivered, failed to deliver)
    POLICY = "policy"  # the approval policy decided it (gated, released)
    APPROVER = "approver"  # the client's designated approver, through an e-mailed link
    OPERATOR = "cli"  # an operator on the server's command line (management commands)


Actor: TypeAlias = "User | Party"


def actor_label(actor: Actor) -> str:
    """How records name an actor: ``user:<username>`` for people, the party's name otherwise."""
    if isinstance(actor, Party):
        return actor.value
    if isinstance(actor, str) or not hasattr(actor, "get_username"):
        raise TypeError(f"an actor is a user or a caisey.actors.Party, not {actor!r}")
    return f"user:{actor.get_username()}"


def actor_user(actor: Actor) -> User | None:
    """The person behind an actor, or None for a system party."""
    return None if isinstance(actor, Party) else actor


def actor_person(actor: Actor, *, doing: str) -> User:
    """The person behind an actor, for a write that records who did it (opened by, requested
    by, created by); a system party cannot do that: ``Forbidden``."""
    if isinstance(actor, Party):
        raise Forbidden(f"only a person can {doing}")
    return actor
