"""The bridge's write path: agent handshakes, connection records, applying agent frames once,
and the one public entry for waking an endpoint or letting it rest (``endpoint_set_mode``).

Tenancy: the agent's hello is authenticated by a named cross-tenant read (the endpoint is not
known yet); from then on everything runs in the endpoint's tenant (``tenancy.bind``). Entries
that take an endpoint bind its tenant themselves: a no-op for a caller that already bound it,
an error (``TenantMismatch``) for one bound to another tenant.
"""

from __future__ import annotations

import contextvars
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bridge import health, notify, outbox
from bridge.models import AgentConnection, InboundReceipt
from bridge.registry import handler_for, prompt_report_listeners
from caisey import ratelimit, tenancy
from caisey.errors import Rejected
from caisey.event_hooks import OutsideEvent, event_emit
from caisey_agent.protocol import (
    CLOSE_RATE_LIMITED,
    CLOSE_REVOKED,
    CLOSE_UNAUTHENTICATED,
    Envelope,
    Hello,
    ModeSet,
)
from endpoints import services as endpoint_services
from endpoints.models import AgentMode, Endpoint, Presence

log = logging.getLogger(__name__)


def heartbeat_interval_for(mode: AgentMode | str) -> float:
    cfg = settings.CAISEY
    return cfg["HEARTBEAT_ACTIVE_S"] if mode == AgentMode.ACTIVE else cfg["HEARTBEAT_LAZY_S"]


# A change of connectivity period (health.PERIOD) is the outside's endpoint.* webhook event.
_PERIOD_EVENT = {"up": "endpoint.back", "degraded": "endpoint.degraded", "offline": "endpoint.offline"}


def _period_event(endpoint: Endpoint, previous: str, connectivity: health.Connectivity) -> None:
    """The ``endpoint.*`` webhook event when the period changed, in the caller's transaction
    (``caisey.event_hooks``; the webhooks leave out an endpoint in an open session, whose record
    tells it)."""
    before, now = health.PERIOD.get(Presence(previous)), health.PERIOD[connectivity.state]
    if before is None or before == now:
        return
    event_emit(
        [
            OutsideEvent(
                tenant_id=endpoint.tenant_id,
                type=_PERIOD_EVENT[now],
                at=connectivity.since or timezone.now(),
                endpoint_id=endpoint.pk,
                data={
                    "session": None,
                    "endpoint": {"id": str(endpoint.pk), "hostname": endpoint.hostname},
                    "action": None,
                    "transcript": None,
                    "detail": {"from": str(previous), "to": connectivity.state.value, "reason": connectivity.reason},
                },
            )
        ]
    )


def presence_announce(
    *,
    endpoint: Endpoint,
    connectivity: health.Connectivity | None = None,
    recorded: bool = False,
    previous: str | None = None,
) -> None:
    """Record the endpoint's connectivity (state, reason, since; unless the caller ``recorded`` it)
    and tell console pages after commit. Without ``connectivity``, it is judged from the row (the
    sweep's last degraded judgement kept: a connect or a mode change never overwrites it). A change
    of period (up, degraded, offline) from ``previous`` (what was announced before; the row's value
    unless the caller ``recorded`` it already) is a webhook event. In the caller's transaction."""
    previous = endpoint.presence_announced if previous is None else previous
    connectivity = connectivity or health.connectivity_of(endpoint, None)
    _period_event(endpoint, previous, connectivity)
    if not recorded:
        endpoint_services.endpoint_presence_record(
            endpoint=endpoint,
            presence=connectivity.state,
            reason=connectivity.reason,
            since=connectivity.since,
            expected=False,
        )
    notify.console_event(
        tenant_id=endpoint.tenant_id,
        endpoint_id=endpoint.pk,
        event="endpoint.presence",
        payload=connectivity.as_payload(endpoint),
    )


# Degraded reasons carry figures that move every sweep ("waiting 31s", "waiting 36s"): a reason
# counts as changed when its wording does, so a degraded endpoint is not re-announced every sweep.
_FIGURES = re.compile(r"\d[\d,.]*")


def connectivity_unchanged(endpoint: Endpoint, now: health.Connectivity) -> bool:
    """Whether ``now`` is what consoles were last told of ``endpoint`` (state, and reason in words)."""
    announced = _FIGURES.sub("#", endpoint.presence_reason)
    return endpoint.presence_announced == now.state and announced == _FIGURES.sub("#", now.reason[:300])


def connectivity_judge(*, endpoint_id) -> bool:
    """Judge one endpoint's connectivity with its health figures now, and announce it if it changed
    (an event that may have made the path degraded: a slow acknowledgement, one connect too many).
    In the endpoint's tenant. True when announced."""
    return bool(connectivity_judge_many(endpoint_ids=[endpoint_id]))


def connectivity_judge_many(*, endpoint_ids) -> int:
    """``connectivity_judge`` for many endpoints, their health read once per tenant (a batch of
    slow acknowledgements under load: one set of health queries, not one per ack). Each tenant's
    in its own scope and transaction. Returns how many were announced."""
    with tenancy.system():  # agent frames of sorts: the endpoints are found by the ids their sockets authenticated
        endpoints = list(Endpoint.objects.filter(pk__in=list(endpoint_ids)))
    by_tenant: dict = {}
    for endpoint in endpoints:
        by_tenant.setdefault(endpoint.tenant_id, []).append(endpoint)
    announced = 0
    for tenant_id, group in by_tenant.items():
        with tenancy.bind(tenant_id), transaction.atomic():
            figures = health.health_for([e.pk for e in group])
            for endpoint in group:
                current = health.connectivity_of(endpoint, figures[endpoint.pk])
                if not connectivity_unchanged(endpoint, current):
                    presence_announce(endpoint=endpoint, connectivity=current)
                    announced += 1
    return announced


# Inside a batch of agent frames (bridge/batcher.py): the endpoints whose slow acknowledgement
# asks for a judgement, judged together once the batch's frames are applied.
judge_later: contextvars.ContextVar[set | None] = contextvars.ContextVar("judge_later", default=None)


def agent_ack_receive(*, endpoint_id, message_id: str, **found) -> None:
    """An agent acknowledged a message (bridge.outbox.outbox_ack). One slower than the degraded
    latency limit may have made the path degraded: that is judged now (in a batch: at its end,
    with the others), not at the next sweep. ``found``: the row as a batch read it
    (``outbox.outbox_ack_targets``), handed on."""
    message = outbox.outbox_ack(endpoint_id=endpoint_id, message_id=message_id, **found)
    if message is not None and (message.latency_ms or 0) > settings.CAISEY["DEGRADED_P95_LATENCY_MS"]:
        later = judge_later.get()
        if later is not None:
            later.add(endpoint_id)
        else:
            connectivity_judge(endpoint_id=endpoint_id)


@dataclass
class Handshake:
    endpoint: Endpoint
    mode: str
    interval: float
    frames: list[str] = field(default_factory=list)


class HandshakeRefused(Rejected):
    """A hello that is not accepted; the socket tells the agent ``code`` and closes with ``close_code``."""

    def __init__(self, *, code: str, reason: str, detail: str, close_code: int) -> None:
        super().__init__(detail)
        self.code = code  # what the agent is told
        self.reason = reason  # why, for the metrics: unauthenticated, revoked, rate_limited
        self.detail = detail
        self.close_code = close_code


def agent_handshake(*, hello: Hello, connection_id: str, remote_ip: str, claim: bool = True) -> Handshake:
    """Everything a hello needs, in one trip to the sync thread (a reconnect storm after a
    restart queues thousands of them there): authenticate, rate-limit, record the connection,
    reconcile the prompts it reports, and claim what waits for it (unless ``claim`` is off: the
    group commit claims for a whole batch of hellos at once). Raises HandshakeRefused."""
    try:
        endpoint = endpoint_services.endpoint_authenticate(endpoint_id=hello.endpoint_id, credential=hello.credential)
    except endpoint_services.AgentAuthError as exc:
        limit, window = settings.CAISEY["RATE_AUTH_FAILURES_PER_IP"]
        if ratelimit.hit("agent-auth-fail", remote_ip, limit=limit, window=window):
            close_code = CLOSE_REVOKED if exc.code == "revoked" else CLOSE_UNAUTHENTICATED
            raise HandshakeRefused(code=exc.code, reason=exc.code, detail=exc.message, close_code=close_code) from None
        raise HandshakeRefused(
            code="rate_limited", reason=exc.code, detail=exc.message, close_code=CLOSE_RATE_LIMITED
        ) from None
    limit, window = settings.CAISEY["RATE_CONNECTS_PER_ENDPOINT"]
    if not ratelimit.hit("agent-connect", str(endpoint.pk), limit=limit, window=window):
        raise HandshakeRefused(
            code="rate_limited",
            reason="rate_limited",
            close_code=CLOSE_RATE_LIMITED,
            detail="too many connects for this endpoint; back off",
        )
    # The credential is verified: from here on, the endpoint's tenant.
    with tenancy.bind(endpoint.tenant_id):
        handshake = agent_connection_record(
            endpoint=endpoint, hello=hello, connection_id=connection_id, remote_ip=remote_ip
        )
        try:
            agent_prompts_report(endpoint=handshake.endpoint, reports=hello.prompts)
        except Exception:  # reconciliation runs again at the next heartbeat; the connection must not fail
            log.exception("reconciling prompts of %s at hello failed", endpoint.pk)
        # Everything waiting for this agent goes now, oldest first, not at the next sweep.
        if claim:
            handshake.frames = outbox.outbox_claim(endpoint_id=endpoint.pk, due_only=False)
    # The socket keeps this for as long as the agent stays connected (thousands of them): its id
    # and tenant only; any other field is loaded when a service reads it (deferred).
    handshake.endpoint = Endpoint.from_db(endpoint._state.db, ["id", "tenant_id"], [endpoint.pk, endpoint.tenant_id])
    return handshake


@transaction.atomic
def agent_connection_record(*, endpoint: Endpoint, hello: Hello, connection_id: str, remote_ip: str) -> Handshake:
    """Record an authenticated connection (in the endpoint's tenant, bound by the caller)."""
    interval = heartbeat_interval_for(endpoint.mode)
    endpoint = endpoint_services.endpoint_record_connect(
        endpoint=endpoint,
        connection_id=connection_id,
        agent_version=hello.agent_version,
        machine=hello.machine,
        interval=interval,
    )
    AgentConnection.objects.create(endpoint=endpoint, connection_id=connection_id, remote_ip=remote_ip)
    # One connect too many in the window makes the path degraded: judged with the figures now (a
    # restart storm's single reconnect each costs one indexed count, not the health queries).
    window_start = timezone.now() - timedelta(seconds=settings.CAISEY["DEGRADED_WINDOW_S"])
    connects = AgentConnection.objects.filter(endpoint=endpoint, opened_at__gte=window_start).count()
    figures = (
        health.health_for([endpoint.pk])[endpoint.pk] if connects >= settings.CAISEY["DEGRADED_RECONNECTS"] else None
    )
    presence_announce(endpoint=endpoint, connectivity=health.connectivity_of(endpoint, figures))
    return Handshake(endpoint=endpoint, mode=endpoint.mode, interval=interval)


def agent_disconnected(*, endpoint_id, connection_id: str, close_code: int | None) -> None:
    """The agent's socket closed. An agent frame of sorts: the endpoint (by the id the socket
    authenticated) is found across tenants, and the rest runs in its tenant."""
    with tenancy.system():
        tenant_id = Endpoint.objects.values_list("tenant_id", flat=True).get(pk=endpoint_id)
    with tenancy.bind(tenant_id), transaction.atomic():
        AgentConnection.objects.filter(connection_id=connection_id).update(
            closed_at=timezone.now(), close_code=close_code
        )
        # What was announced before the disconnect records offline (the webhooks' period change).
        previous = Endpoint.objects.values_list("presence_announced", flat=True).get(pk=endpoint_id)
        if endpoint_services.endpoint_record_disconnect(endpoint_id=endpoint_id, connection_id=connection_id):
            presence_announce(endpoint=Endpoint.objects.get(pk=endpoint_id), previous=previous)


def agent_context_record(*, endpoint: Endpoint, machine: dict) -> None:
    """A connected agent's machine context, sent again with a heartbeat (in the endpoint's tenant)."""
    with tenancy.bind(endpoint.tenant_id):
        endpoint_services.endpoint_context_record(endpoint_id=endpoint.pk, machine=machine)


class UnsupportedMessage(Rejected):
    """An agent frame of a type no app registered a handler for."""

    code = "unsupported"


def agent_frame_apply(*, endpoint: Endpoint, envelope: Envelope) -> bool:
    """Apply one agent frame exactly once. Returns False when its id was applied before."""
    handler = handler_for(envelope.type)
    if handler is None:
        raise UnsupportedMessage(f"no handler for {envelope.type!r}")
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():
        try:
            with transaction.atomic():
                InboundReceipt.objects.create(endpoint=endpoint, message_id=envelope.id, message_type=envelope.type)
        except IntegrityError:
            return False
        handler(endpoint, envelope)
    return True


def endpoint_set_mode(*, endpoint: Endpoint, mode: AgentMode | str, reason: str) -> bool:
    """The one public entry for waking an endpoint (active) or letting it rest (lazy).

    The row is endpoints' (``endpoint_mode_change``); the bridge's part is the ``mode.set``
    that waits in the outbox until the agent is reachable (its acknowledgement records the new
    cadence: ``bridge/handlers.py``) and the presence announced to consoles. In the endpoint's
    tenant, in one transaction. Returns False when it already was in that mode."""
    mode = AgentMode(mode)
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():
        if not endpoint_services.endpoint_mode_change(endpoint=endpoint, mode=mode):
            return False
        outbox.outbox_enqueue(
            endpoint=endpoint,
            body=ModeSet(mode=mode.value, heartbeat_interval=heartbeat_interval_for(mode)),
            ref_type="mode",
            ref_id=reason[:64],
        )
        presence_announce(endpoint=Endpoint.objects.get(pk=endpoint.pk))  # waking, until the agent applies it
    return True


def endpoint_set_mode_many(*, endpoints: list[Endpoint], mode: AgentMode | str, reason: str) -> list[Endpoint]:
    """``endpoint_set_mode`` for many endpoints of the bound tenant (a bulk run wakes hundreds), in
    the caller's transaction and a fixed number of statements: one set-based update, rows locked in
    primary-key order (``endpoint_mode_change_many``), the ``mode.set`` rows written together and
    their doorbells rung as one batch. Presence is not announced one endpoint at a time: the caller
    tells consoles once, with the endpoints returned (those that changed)."""
    mode = AgentMode(mode)
    at = timezone.now()
    changed = set(endpoint_services.endpoint_mode_change_many(endpoint_ids=[e.pk for e in endpoints], mode=mode, at=at))
    woken = [e for e in endpoints if e.pk in changed]
    body = ModeSet(mode=mode.value, heartbeat_interval=heartbeat_interval_for(mode))
    for endpoint in woken:
        endpoint.mode, endpoint.mode_changed_at = mode, at
    outbox.outbox_enqueue_many(
        messages=[{"endpoint": e, "body": body, "ref_type": "mode", "ref_id": reason[:64]} for e in woken]
    )
    return woken


class ConditionsAhead:
    """The bridge conditions of the endpoints of one batch of agent frames (``bridge/batcher.py``),
    read for all of them, per tenant, the first time one is asked for (a fan-out's results arrive
    together: one set of health queries per batch, not one per result). Read within the batch's
    transaction, so they are as fresh as the batch; each is handed out once."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.by_tenant: dict = {}
        for endpoint in endpoints:
            self.by_tenant.setdefault(endpoint.tenant_id, set()).add(endpoint.pk)
        self.read: dict = {}

    def take(self, endpoint: Endpoint) -> dict | None:
        ids = self.by_tenant.pop(endpoint.tenant_id, None)
        if ids is not None and endpoint.pk in ids:
            with tenancy.bind(endpoint.tenant_id):
                self.read.update(bridge_conditions_many(endpoint_ids=list(ids)))
        elif ids is not None:
            self.by_tenant[endpoint.tenant_id] = ids
        return self.read.pop(endpoint.pk, None)


conditions_ahead: contextvars.ContextVar[ConditionsAhead | None] = contextvars.ContextVar(
    "conditions_ahead", default=None
)


def bridge_conditions(*, endpoint: Endpoint) -> dict:
    """The bridge conditions an action runs under, recorded with it (read fresh, not from the caller's copy)."""
    ahead = conditions_ahead.get()
    known = ahead.take(endpoint) if ahead is not None else None
    if known is not None:
        return known
    with tenancy.bind(endpoint.tenant_id):
        return bridge_conditions_many(endpoint_ids=[endpoint.pk])[endpoint.pk]


def bridge_conditions_many(*, endpoint_ids: list, endpoints: list[Endpoint] | None = None) -> dict:
    """bridge_conditions of many endpoints in a fixed number of queries (a bulk run asks for thousands).
    In the caller's tenant: ids of another tenant are not found. ``endpoints``: those rows, read
    fresh by the caller in this transaction (a bulk run has them), so they are not read again."""
    figures = health.health_for(endpoint_ids)
    now = timezone.now().isoformat()

    def conditions(endpoint: Endpoint, h: health.EndpointHealth) -> dict:
        return {
            "connectivity": health.connectivity(endpoint, h).value,
            "queue_depth": h.queue_depth,
            "latency_p50_ms": h.latency_p50_ms,
            "latency_p95_ms": h.latency_p95_ms,
            "reconnects_1h": h.reconnects_1h,
            "at": now,
        }

    rows = endpoints if endpoints is not None else Endpoint.objects.filter(pk__in=endpoint_ids)
    return {e.pk: conditions(e, figures[e.pk]) for e in rows if e.pk in figures}


def agent_prompts_report(*, endpoint: Endpoint, reports: list) -> None:
    """Hand the runtime's list of held prompts to the domain, which reconciles."""
    with tenancy.bind(endpoint.tenant_id), transaction.atomic():
        for listener in prompt_report_listeners():
            listener(endpoint, reports)
