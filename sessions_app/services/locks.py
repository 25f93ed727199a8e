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
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Subquery

from caisey import tenancy
from sessions_app.models import Action, FollowUp, Prompt, SupportSession


def _locks() -> bool:
    return connection.features.has_select_for_update


def session_lock(*, session_id: Any, tenant_id: Any) -> None:
    """Lock one session's row (a no-op when this transaction holds it already)."""
    if not _locks():
        return
    with tenancy.bind(tenant_id):
        list(SupportSession.objects.select_for_update().filter(pk=session_id).values_list("pk", flat=True))


def session_lock_holding(model: type[Action] | type[Prompt] | type[FollowUp], pk: Any) -> None:
    """Lock the session of the row ``model`` ``pk`` (one statement), before that row is locked or
    changed: for callers that know only the row's id (an outbox row's owner, an agent's report).
    Runs in the tenant bound by the caller; an id of another tenant locks nothing."""
    if not _locks():
        return
    owner = model.objects.filter(pk=pk).values("session_id")[:1]
    list(SupportSession.objects.select_for_update().filter(pk=Subquery(owner)).values_list("pk", flat=True))
