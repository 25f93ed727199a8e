"""Status transitions: one table per status field, one function that applies it.

``transition`` checks the move against the model's table, then writes it with
a conditional ``UPDATE ... WHERE status = current``: when another process got
there first zero rows change and the caller learns of the race instead of
overwriting it. Both failures are ``Conflict`` errors (caisey.errors):
``IllegalTransition`` for a move the table does not allow, ``TransitionRace`` for
a lost race. Callers that expect races (agents report, sweeps run, technicians
click at once) use ``transition_if``, which answers False for a lost race.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models

from caisey.errors import Conflict


class IllegalTransition(Conflict):
    def __init__(self, model: str, current: str, target: str) -> None:
        super().__init__(f"{model}: {current} -> {target} is not an allowed transition")
        self.current = current
        self.target = target


class TransitionRace(Conflict):
    """The row was no longer in the expected state when the update ran."""


def check(table: Mapping[str, frozenset[str]], model: str, current: str, target: str) -> None:
    if target not in table.get(current, frozenset()):
        raise IllegalTransition(model, current, target)


def transition(
    instance: models.Model,
    *,
    to: str,
    table: Mapping[str, frozenset[str]],
    field: str = "status",
    updates: Mapping[str, Any] | None = None,
) -> None:
    """Move ``instance.<field>`` to ``to``; raises IllegalTransition or TransitionRace.

    Uses the model's base manager: the caller has already resolved the row
    within its tenant, and the transition must not depend on who is bound.
    """
    current = getattr(instance, field)
    check(table, type(instance).__name__, current, to)
    values = {field: to, **(updates or {})}
    changed = type(instance)._base_manager.filter(pk=instance.pk, **{field: current}).update(**values)
    if changed == 0:
        raise TransitionRace(f"{type(instance).__name__} {instance.pk} left {current} before -> {to}")
    for name, value in values.items():
        setattr(instance, name, value)


def transition_if(
    instance: models.Model,
    *,
    to: str,
    table: Mapping[str, frozenset[str]],
    field: str = "status",
    updates: Mapping[str, Any] | None = None,
) -> bool:
    """``transition`` for callers that expect races: False (the instance reloaded, nothing
    written) when another writer moved the row first. An illegal move still raises."""
    try:
        transition(instance, to=to, table=table, field=field, updates=updates)
    except TransitionRace:
        instance.refresh_from_db(fields=[field])
        return False
    return True
