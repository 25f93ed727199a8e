"""Bulk runs: one diagnostic across many endpoints, a session and an action per endpoint.

The endpoints are chosen by ``selectors.bulk.bulk_run_endpoints`` (console and API alike);
this service opens the sessions and queues the actions in one transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from bridge.services import bridge_conditions_many
from caisey.actors import Actor, actor_person
from caisey.errors import Forbidden
from caisey.transactions import retrying_atomic
from endpoints.access import acting_for
from endpoints.models import Endpoint
from sessions_app.limits import (
    DEFAULT_BULK_EXPIRY,
    MAX_BULK_ENDPOINTS,
    MAX_EXPIRY,
    MIN_BULK_EXPIRY,
    REASON_MAX_CHARS,
)
from sessions_app.models import BulkRun, WakeChoice
from sessions_app.services.actions import action_params_clean, action_request
from sessions_app.services.sessions import SessionError, session_open


@retrying_atomic()
def bulk_run_start(
    *,
    actor: Actor,
    endpoints: list[Endpoint],
    kind: str,
    params: dict[str, Any],
    reason: str = "",
    expires_in: timedelta = DEFAULT_BULK_EXPIRY,
    wake: str = WakeChoice.NOW,
) -> BulkRun:
    """One diagnostic across many endpoints: a session per endpoint, offline ones stay queued.
    ``wake``=WAIT leaves every endpoint resting: each runs it at its next lazy check-in."""
    if not endpoints:
        raise SessionError("choose at least one endpoint")
    if len(endpoints) > MAX_BULK_ENDPOINTS:
        raise SessionError(f"a bulk run reaches at most {MAX_BULK_ENDPOINTS} endpoints")
    if wake not in WakeChoice.values:
        raise SessionError(f"wake must be one of: {', '.join(WakeChoice.values)}")
    if not MIN_BULK_EXPIRY <= expires_in <= MAX_EXPIRY:
        raise SessionError(f"the expiry must be between a minute and {MAX_EXPIRY.days} days")
    tenant_id = endpoints[0].tenant_id
    with acting_for(actor, tenant_id):
        if any(e.tenant_id != tenant_id for e in endpoints):
            raise Forbidden("endpoints of another tenant")
        clean = action_params_clean(kind=kind, params=params)
        run = BulkRun.objects.create(
            tenant_id=tenant_id,
            created_by=actor_person(actor, doing="start a bulk run"),
            kind=kind,
            params=clean,
            reason=reason[:REASON_MAX_CHARS],
            expires_at=timezone.now() + expires_in,
        )
        conditions = bridge_conditions_many(endpoint_ids=[e.pk for e in endpoints])
        # Endpoint rows are locked in primary-key order, as the last-seen flush takes them
        # (endpoints/services.py endpoint_touch_many): two writers in one order cannot deadlock.
        for endpoint in sorted(endpoints, key=lambda e: e.pk):
            session = session_open(
                actor=actor,
                endpoint=endpoint,
                reason=f"bulk run: {reason or kind}",
                conditions=conditions[endpoint.pk],
                wake=wake == WakeChoice.NOW,
            )
            action_request(
                actor=actor,
                session=session,
                kind=kind,
                params=clean,
                expires_in=expires_in,
                bulk_run=run,
                conditions=conditions[endpoint.pk],
                wake=wake,
            )
        return run
