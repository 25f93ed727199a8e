"""Connectivity periods in the session record.

The bridge conditions are recorded when a session opens and with every action; between them the
path to the endpoint may degrade, drop or recover. A periodic sweep compares each open session's
endpoint with what its record last said and appends an entry when the period changes, with the
figures that explain it, so a reviewer sees why an action waited or a prompt was late.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from bridge import health
from caisey import tenancy
from caisey.actors import Party, actor_label
from endpoints.models import Presence
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import SessionStatus, SupportSession
from sessions_app.services.transcript import transcript_append

# A change of period (bridge.health.PERIOD: lazy, active and waking are all "up") is worth an entry.
_PERIOD = health.PERIOD


def session_connectivity_sweep() -> int:
    """Append a `bridge.connectivity` entry to each open session whose endpoint's period changed
    (every tenant, by name; each entry written in its session's tenant)."""
    with tenancy.system():
        sessions = list(SupportSession.objects.filter(status=SessionStatus.OPEN).select_related("endpoint"))
        if not sessions:
            return 0
        now = timezone.now()
        figures = health.health_for({s.endpoint_id for s in sessions}, now)
        appended = 0
        for session in sessions:
            h = figures[session.endpoint_id]
            current = health.connectivity(session.endpoint, h, now)
            # A session opened before this was recorded counts as up: nothing to report until it changes.
            recorded = _PERIOD[Presence(session.connectivity)] if session.connectivity else "up"
            if recorded == _PERIOD[current]:
                continue
            with transaction.atomic(), tenancy.bind(session.tenant_id):
                # Conditional: two sweeps running at once record the change once.
                if not SupportSession.objects.filter(
                    pk=session.pk, status=SessionStatus.OPEN, connectivity=session.connectivity
                ).update(connectivity=current):
                    continue
                last_seen = session.endpoint.last_seen_at
                context_at = session.endpoint.context_updated_at
                transcript_append(
                    session=session,
                    kind=K.BRIDGE_CONNECTIVITY,
                    actor=actor_label(Party.BRIDGE),
                    data={
                        "from": session.connectivity or None,
                        "to": current.value,
                        "why": h.degraded_reasons,
                        "queue_depth": h.queue_depth,
                        "latency_p95_ms": h.latency_p95_ms,
                        "reconnects_1h": h.reconnects_1h,
                        "last_seen": last_seen.isoformat() if last_seen else None,
                        # The machine's last known state is the one reported then (kept on the endpoint).
                        "context_updated_at": context_at.isoformat() if context_at else None,
                    },
                )
                appended += 1
        return appended
