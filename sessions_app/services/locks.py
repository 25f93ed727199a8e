"""Lock order: a session's row before the rows it holds.

Every transaction that changes a session's prompts, actions or follow-ups (or the outbox rows
that carry them) locks the session's row first, then the row it changes, and only that row
(``select_for_update(of=("self",))``: a plain ``select_for_update`` with ``select_related``
also locks every joined row on PostgreSQL: the session, the endpoint and the tenant, in the
order of the join).

Why: transcript_append locks the session to extend its chain, so a transaction that locked a
prompt first and its session second could wait, in a circle, for one that held the session
and wanted the prompt. CI on PostgreSQL hit exactly that (``deadlock detected ... while locking
tuple in relation "sessions_app_supportsession"``): a technician cancelled a prompt (prompt,
then session) while the bridge's group commit applied prompt reports of the same session
(session via the first report, then the next prompt). With the session first, the second
transaction waits at the session instead of deadlocking.

SQLite has no row locks (one writer at a time): every function here is then a no-op.

Not memoised per transaction, although a transition can ask for the same session's lock up to
three times (the service's fresh read, the move, the transcript append): a second
``SELECT ... FOR UPDATE`` of a row this transaction holds returns at once, and a memo would be
wrong across savepoints (the bridge's group commit runs each frame in one; on PostgreSQL rolling
a savepoint back releases the row locks taken inside it, so a memo would skip a lock that is gone).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import QuerySet, Subquery

from caisey import tenancy
from sessions_app.models import Action, Prompt, SupportSession


def _lock(sessions: QuerySet[SupportSession]) -> None:
    """Lock the session rows ``sessions`` selects, and nothing else; a no-op without row locks."""
    if connection.features.has_select_for_update:
        list(sessions.select_for_update().values_list("pk", flat=True))


def session_lock(*, session_id: Any, tenant_id: Any) -> None:
    """Lock one session's row (returns at once when this transaction holds it already)."""
    with tenancy.bind(tenant_id):
        _lock(SupportSession.objects.filter(pk=session_id))


def session_lock_holding(model: type[Action] | type[Prompt], pk: Any) -> None:
    """Lock the session of the row ``model`` ``pk`` (one statement), before that row is locked or
    changed: for callers that know only the row's id (an outbox row's owner, an agent's report).
    Runs in the tenant bound by the caller; an id of another tenant locks nothing."""
    owner = model.objects.filter(pk=pk).values("session_id")[:1]
    _lock(SupportSession.objects.filter(pk=Subquery(owner)))
