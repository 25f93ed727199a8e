"""The durable outbox: every server -> agent message is a row before it is a frame.

Life of a message: ``outbox_enqueue`` writes it in the caller's transaction and
rings the agent's doorbell after commit; the connection serving that agent
claims due rows (one attempt each) and sends them; the agent's ack ends it.
The periodic ``outbox_sweep`` keeps everything moving when doorbells are lost
(Redis restarted, Daphne killed): it rings again for connected agents, counts
attempts for unreachable ones, and gives up after the kind's retry budget,
marking the row failed_to_deliver and telling its owner.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from bridge import notify
from bridge.models import OUTBOX_TRANSITIONS, OutboxMessage, OutboxStatus
from bridge.registry import delivered_handler, failed_handler, owner_lock_for
from caisey import secretbox, tenancy
from caisey.actors import Actor, Party, actor_label
from caisey.state_machine import transition, transition_if
from caisey_agent import protocol as p
from endpoints.models import Endpoint, Presence
from endpoints.presence import presence_of


def retry_policy(kind: str) -> dict[str, float]:
    policies = settings.CAISEY["OUTBOX_RETRY"]
    return {**policies["default"], **policies.get(kind, {})}


def backoff(kind: str, attempts: int) -> timedelta:
    """Capped exponential backoff with full jitter, per message kind."""
    policy = retry_policy(kind)
    ceiling = min(policy["cap_s"], policy["base_s"] * 2 ** min(attempts, 30))
    return timedelta(seconds=random.uniform(policy["base_s"] / 2, max(policy["base_s"] / 2, ceiling)))


def outbox_enqueue(
    *,
    endpoint: Endpoint,
    body: Any,
    ref_type: str = "",
    ref_id: str = "",
    expires_at: datetime | None = None,
    max_attempts: int | None = None,
    not_before: datetime | None = None,
) -> OutboxMessage:
    """Persist a message for an agent; call inside the transaction of the change that caused it.

    ``max_attempts`` overrides the kind's retry budget, for messages that should wait for
    an away endpoint until ``expires_at`` rather than give up after a few minutes.
    ``not_before`` holds it until then (an endpoint's next check-in): no doorbell now; the
    outbox sweep rings for it once it is due, and a reconnecting agent's hello takes it at once.
    """
    if body.TYPE not in p.SERVER_TO_AGENT:
        raise ValueError(f"{body.TYPE!r} is not a server -> agent message")
    now = timezone.now()
    with tenancy.bind(endpoint.tenant_id):  # the endpoint's tenant (a caller bound to another raises)
        message = _build(
            endpoint=endpoint,
            body=body,
            ref_type=ref_type,
            ref_id=ref_id,
            expires_at=expires_at,
            max_attempts=max_attempts,
            due=max(now, not_before) if not_before else now,
        )
        message.save(force_insert=True)
    if not_before is None or not_before <= now:
        notify.agent_doorbell(endpoint_id=endpoint.pk, reason="queued")
    return message


def outbox_enqueue_many(*, messages: list[dict[str, Any]]) -> list[OutboxMessage]:
    """``outbox_enqueue`` for many messages (a bulk run's), each a dict of its keyword arguments,
    written in one statement batch in the caller's transaction; one doorbell per endpoint with a
    message due now, all rung together after commit. In the bound tenant (checked per row)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_enqueue_many must run inside the transaction of the change that caused it")
    now = timezone.now()
    rows, ring = [], []
    for item in messages:
        body, not_before = item["body"], item.get("not_before")
        if body.TYPE not in p.SERVER_TO_AGENT:
            raise ValueError(f"{body.TYPE!r} is not a server -> agent message")
        rows.append(
            _build(
                endpoint=item["endpoint"],
                body=body,
                ref_type=item.get("ref_type", ""),
                ref_id=item.get("ref_id", ""),
                expires_at=item.get("expires_at"),
                max_attempts=item.get("max_attempts"),
                due=max(now, not_before) if not_before else now,
            )
        )
        if not_before is None or not_before <= now:
            ring.append(item["endpoint"].pk)
    OutboxMessage.objects.insert_many(rows)  # keys set here: tenants checked, one executemany
    for endpoint_id in dict.fromkeys(ring):
        notify.agent_doorbell(endpoint_id=endpoint_id, reason="queued")
    return rows


def _build(*, endpoint, body, ref_type, ref_id, expires_at, max_attempts, due) -> OutboxMessage:
    return OutboxMessage(
        id=p.new_id(),
        endpoint=endpoint,
        kind=body.TYPE,
        body=p.to_dict(body),
        ref_type=ref_type,
        ref_id=str(ref_id),
        max_attempts=max_attempts or int(retry_policy(body.TYPE)["max_attempts"]),
        next_attempt_at=due,
        expires_at=expires_at,
        # A held message enters the queue when it is due: its age (oldest unacknowledged) and its
        # delivery latency measure the path from then, not the hold (an action waiting for a lazy
        # check-in made a healthy endpoint look degraded: a 60 s "latency", seen in the browser test).
        created_at=due,
    )


def _opened(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """An action's secret parameters, kept sealed in the outbox row, opened for the frame only (which
    travels over the agent's TLS websocket). A wiped one (the mask) stays the mask."""
    names = p.secret_names(kind)
    return {
        name: (
            secretbox.unseal(value["sealed"], purpose=secretbox.ACTION_SECRETS, what="an action secret")
            if name in names and isinstance(value, dict) and isinstance(value.get("sealed"), str)
            else value
        )
        for name, value in params.items()
    }


def frame_of(message: OutboxMessage) -> str:
    body = p.from_dict(p.SERVER_TO_AGENT[message.kind], message.body)
    if isinstance(body, p.ActionRun):
        body.params = _opened(body.kind, body.params)
    return p.encode(p.Envelope(type=message.kind, id=message.id, ts=message.created_at.timestamp(), body=body))


@transaction.atomic  # one commit for the whole claim, not one per row
def outbox_claim(*, endpoint_id, due_only: bool = True, limit: int = 500) -> list[str]:
    """Claim this endpoint's sendable messages, oldest first; each claim counts one attempt.

    Transport for one authenticated endpoint: every row read or written is pinned to
    ``endpoint_id``, so the claim is named cross-tenant work (``tenancy.system()``) that can
    reach no other endpoint's row, whoever calls it (the socket's hello, its doorbells, tests).

    The conditional update makes two processes claiming the same row at once
    send it once (and a double send would be harmless: the agent deduplicates).
    """
    frames = outbox_claim_many(requests=[(endpoint_id, due_only)], limit=limit)
    return next(iter(frames.values()), [])  # one endpoint's (however its id was spelled)


@transaction.atomic
def outbox_claim_many(*, requests: list[tuple[Any, bool]], limit: int = 500) -> dict[Any, list[str]]:
    """``outbox_claim`` for many endpoints at once (the socket process's group commit claims for
    every socket of a batch): ``requests`` is ``[(endpoint_id, due_only), ...]``; returns the
    frames per endpoint id, each endpoint's oldest first, at most ``limit`` each.

    One query reads the rows of every endpoint; the claims are conditional updates grouped by
    attempt count (a row claimed meanwhile by another process is not sent again), so a batch of
    a thousand doorbells costs a few statements, not a thousand transactions. Pinned to the
    requested endpoints' ids: named cross-tenant transport (``tenancy.system()``)."""
    if not requests:
        return {}
    now = timezone.now()
    with tenancy.system():
        return _claim_many(requests=requests, limit=limit, now=now)


_CLAIM_CHUNK = 200  # rows per conditional update (two parameters each in its CASE: under SQLite's 999)


def _claim_many(*, requests: list[tuple[Any, bool]], limit: int, now: datetime) -> dict[Any, list[str]]:
    ack_timeout = timedelta(seconds=settings.CAISEY["OUTBOX_ACK_TIMEOUT_S"])
    every = [endpoint_id for endpoint_id, due_only in requests if not due_only]
    due = [endpoint_id for endpoint_id, due_only in requests if due_only and endpoint_id not in every]
    wanted = Q(endpoint_id__in=every) | Q(endpoint_id__in=due, next_attempt_at__lte=now)
    rows = OutboxMessage.objects.filter(wanted, status=OutboxStatus.QUEUED)
    if len(requests) == 1:
        rows = rows.order_by("created_at")[:limit]
    else:  # at most ``limit`` per endpoint, in the same one query
        rows = rows.annotate(
            rank=Window(RowNumber(), partition_by=[F("endpoint_id")], order_by=[F("created_at").asc(), F("id").asc()])
        ).filter(rank__lte=limit)
    candidates = [m for m in rows if not (m.expires_at and m.expires_at <= now)]  # expired: the sweep ends them
    claimed: set[str] = set()
    by_attempts: dict[int, list[OutboxMessage]] = {}
    for message in candidates:
        by_attempts.setdefault(message.attempts, []).append(message)
    for attempts, messages in by_attempts.items():
        for start in range(0, len(messages), _CLAIM_CHUNK):
            chunk = messages[start : start + _CLAIM_CHUNK]
            # The ack has this long before a retry is due (a busy server may take seconds to apply
            # it; retrying sooner only adds duplicates to its queue), then the jittered backoff.
            retry_at = {m.pk: now + ack_timeout + backoff(m.kind, attempts + 1) for m in chunk}
            next_attempt = (
                Case(*(When(pk=pk, then=Value(at)) for pk, at in retry_at.items()), output_field=DateTimeField())
                if len(chunk) > 1
                else next(iter(retry_at.values()))
            )
            pks = list(retry_at)
            updated = OutboxMessage.objects.filter(pk__in=pks, status=OutboxStatus.QUEUED, attempts=attempts).update(
                attempts=attempts + 1, last_attempt_at=now, next_attempt_at=next_attempt
            )
            if updated == len(pks):
                claimed.update(pks)
            elif updated:  # another process took some of them first: ours carry this claim's time
                claimed.update(
                    OutboxMessage.objects.filter(pk__in=pks, attempts=attempts + 1, last_attempt_at=now).values_list(
                        "pk", flat=True
                    )
                )
    frames: dict[Any, list[str]] = {}
    for message in sorted(candidates, key=lambda m: (m.created_at, m.pk)):
        if message.pk in claimed:
            frames.setdefault(message.endpoint_id, []).append(frame_of(message))
    return frames


def outbox_ack_targets(*, acks: list[tuple[Any, str]]) -> dict[tuple[Any, str], OutboxMessage]:
    """The rows many acks name, in one query (the group commit's acks): ``{(endpoint_id,
    message_id): row}``, each with its ``tenant_id``; an ack naming another endpoint's row, or
    none, is absent. Handed to ``outbox_ack(found=...)``."""
    if not acks:
        return {}
    with tenancy.system():  # agent frames: by id and each agent's own endpoint only
        rows = OutboxMessage.objects.filter(pk__in={message_id for _, message_id in acks}).annotate(
            tenant_id=F("endpoint__tenant_id")
        )
        found = {(row.endpoint_id, row.pk): row for row in rows}
    return {key: found[key] for key in acks if key in found}


_LOOK_UP = object()


def outbox_ack(*, endpoint_id, message_id: str, found: Any = _LOOK_UP) -> OutboxMessage | None:
    """The agent acknowledged a message: it is delivered, and its owner is told (the handler
    registered for its ``ref_type`` with ``bridge.registry.on_delivered``), in one transaction.
    Only that agent's own rows can be acked.

    An agent frame: the row is found across tenants (by id and the agent's own endpoint, so an
    agent reaches only its rows) and everything after runs in the row's tenant. ``found``: the
    row as ``outbox_ack_targets`` read it for a batch of acks (None: there is no such row)."""
    if found is _LOOK_UP:
        with tenancy.system():
            found = (
                OutboxMessage.objects.filter(pk=message_id, endpoint_id=endpoint_id)
                .annotate(tenant_id=F("endpoint__tenant_id"))
                .first()
            )
    message = found
    if message is None or message.status in (OutboxStatus.ACKED, OutboxStatus.CANCELLED):
        return None
    # Its owner's handler reads ``message.endpoint.tenant_id``: known already, not a row to load
    # (any other field of it is loaded when read).
    message.endpoint = Endpoint.from_db(
        message._state.db, ["id", "tenant_id"], [message.endpoint_id, message.tenant_id]
    )
    now = timezone.now()
    with tenancy.bind(message.tenant_id), transaction.atomic():
        _lock_owner(message)
        if not transition_if(
            message,
            to=OutboxStatus.ACKED,
            table=OUTBOX_TRANSITIONS,
            updates={
                "acked_at": now,
                # The path's latency: from the send on the connection that delivered it (its last
                # claim) to the ack, not from its creation; time it waited for an away endpoint is
                # not delivery latency (it made recovered endpoints look degraded: p95 73,798 ms).
                "latency_ms": (now - (message.last_attempt_at or message.created_at)).total_seconds() * 1000,
                "status_changed_by": actor_label(Party.AGENT),
            },
        ):
            return None
        handler = delivered_handler(message.ref_type)
        if handler is not None:
            handler(message)
    return message


def _lock_owner(message: OutboxMessage) -> None:
    """The owner's rows are locked before the outbox row (``bridge.registry.owner_lock``)."""
    lock = owner_lock_for(message.ref_type)
    if lock is not None:
        lock(message)


def _fail(message: OutboxMessage, *, reason: str) -> bool:
    """Give up on a message and tell its owner (``bridge.registry.on_failed``), in one
    transaction, in the row's tenant."""
    with tenancy.bind(message.endpoint.tenant_id), transaction.atomic():
        _lock_owner(message)
        if not transition_if(
            message,
            to=OutboxStatus.FAILED_TO_DELIVER,
            table=OUTBOX_TRANSITIONS,
            updates={"last_error": reason[:500], "status_changed_by": actor_label(Party.BRIDGE)},
        ):
            return False
        handler = failed_handler(message.ref_type)
        if handler is not None:
            handler(message)
    return True


@transaction.atomic
def outbox_resend(*, actor: Actor, message: OutboxMessage) -> OutboxMessage:
    """A technician's explicit resend of a message that failed: a fresh retry budget, same event id."""
    transition(
        message,
        to=OutboxStatus.QUEUED,
        table=OUTBOX_TRANSITIONS,
        updates={
            "next_attempt_at": timezone.now(),
            "max_attempts": message.attempts + int(retry_policy(message.kind)["max_attempts"]),
            "expires_at": None,
            "status_changed_by": actor_label(actor),
        },
    )
    notify.agent_doorbell(endpoint_id=message.endpoint_id, reason="resend")
    return message


def outbox_retry_now(*, actor: Actor, message: OutboxMessage) -> bool:
    """A technician's resend of a message still waiting for its endpoint: due now (same event id,
    same budget), and the doorbell rung. False when it is no longer waiting."""
    due = OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.QUEUED).update(
        next_attempt_at=timezone.now(), status_changed_by=actor_label(actor)
    )
    if due:
        notify.agent_doorbell(endpoint_id=message.endpoint_id, reason="resend")
    return bool(due)


@transaction.atomic
def outbox_hurry(*, message: OutboxMessage) -> bool:
    """A queued message held for later (``not_before``) is due now: the agent's doorbell rings
    after commit. False when it is no longer queued."""
    with tenancy.bind(message.endpoint.tenant_id):
        hurried = OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.QUEUED).update(
            next_attempt_at=timezone.now()
        )
    if hurried:
        notify.agent_doorbell(endpoint_id=message.endpoint_id, reason="woken")
    return bool(hurried)


@transaction.atomic
def outbox_cancel(*, actor: Actor, message: OutboxMessage) -> None:
    transition(
        message, to=OutboxStatus.CANCELLED, table=OUTBOX_TRANSITIONS, updates={"status_changed_by": actor_label(actor)}
    )


def outbox_sweep(*, limit: int = 5000) -> dict[str, int]:
    """Move every due message along: doorbell, counted attempt, or failed_to_deliver.
    A sweep over every tenant: named so (``tenancy.system()``); each failure is then
    handled in its row's tenant."""
    with tenancy.system():
        return _sweep(limit=limit, now=timezone.now())


def _sweep(*, limit: int, now: datetime) -> dict[str, int]:
    due = (
        OutboxMessage.objects.filter(status=OutboxStatus.QUEUED, next_attempt_at__lte=now)
        .select_related("endpoint")
        .order_by("next_attempt_at")[:limit]
    )
    stats = {"doorbells": 0, "unreachable": 0, "failed": 0}
    ring: set = set()
    for message in due:
        if message.expires_at and message.expires_at <= now:
            stats["failed"] += _fail(message, reason="expired before the endpoint could be reached")
            continue
        if message.attempts >= message.max_attempts:
            stats["failed"] += _fail(
                message, reason=message.last_error or f"no acknowledgement after {message.attempts} attempts"
            )
            continue
        if presence_of(message.endpoint, now) != Presence.OFFLINE:
            ring.add(message.endpoint_id)
            continue
        # Unreachable: the attempt is counted, so the retry budget runs out while it stays away.
        stats["unreachable"] += OutboxMessage.objects.filter(
            pk=message.pk, status=OutboxStatus.QUEUED, attempts=message.attempts
        ).update(
            attempts=F("attempts") + 1,
            last_attempt_at=now,
            next_attempt_at=now + backoff(message.kind, message.attempts + 1),
            last_error="endpoint offline",
        )
    for endpoint_id in ring:
        notify.ring_agent_now(endpoint_id=endpoint_id, reason="retry")
    stats["doorbells"] = len(ring)
    return stats
