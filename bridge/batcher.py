"""Group commit: the database work of every agent socket of this process, applied in batches.

Why: every database call of a Daphne process runs on one thread, one after another. One
transaction per agent frame (ack, output, result, prompt report, hello, outbox claim) made a
fan-out to 1,000 agents cost about eight transactions per agent, one commit each.

How it works:

* A socket hands its work to ``submit(Unit...)`` and awaits its own outcome. A socket has at
  most one unit in flight (Channels handles a consumer's messages one after another), so the
  order of an endpoint's frames is the order its socket submitted them.
* One drain task per event loop takes everything submitted, up to ``MAX_BATCH`` units, and
  applies it in one trip to the sync thread (``apply_batch``), in ONE transaction:

  1. the outbox rows the batch's acks name are read in one query (``outbox_ack_targets``), and
     the bridge conditions its results record, once for all its endpoints (``ConditionsAhead``);
  2. each unit runs in its own savepoint, in the order submitted: one that raises is rolled
     back alone, and only its socket answers with an error (the agent sends it again). One that
     PostgreSQL aborted to break a deadlock (or a serialization conflict) is nobody's error: it
     goes into the next batch instead (``RETRIES`` times), after this one committed and released
     what the other transaction waited for;
  3. the connectivity of the endpoints whose acks came slowly is judged together
     (``connectivity_judge_many``: one set of health queries per tenant, not one per ack);
  4. the outbox claims of the batch (doorbells, and the hellos' "everything waiting") are made
     for every endpoint at once (``outbox_claim_many``: one read, a few conditional updates);
  5. commit. Doorbells and console events the units rang go out after the commit, handed to
     the event loop together (``bridge.notify``).

* No timer: on a quiet server the first unit starts a batch at once, so a single action's round
  trip does not grow; under load, what arrives while a batch is applied forms the next batch
  (the window is the time of one batch, bounded by ``MAX_BATCH``).
* Nothing is acknowledged before its batch committed. A process killed mid-batch committed
  nothing of it and acknowledged nothing: the agents send again, and the inbound receipts and
  the outbox's conditional updates keep every effect exactly-once. A commit that fails fails
  every unit of the batch (each socket answers with an error; the agents send again).

The database stays the record: nothing here outlives the batch being applied.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from bridge import metrics, outbox, services
from caisey.transactions import is_retryable

log = logging.getLogger(__name__)

RETRIES = 3  # a unit aborted by a deadlock goes into the next batch at most this many times
MAX_BATCH = 100  # units per transaction: bounds the time a batch holds the write lock (and its latency)
SLOW_BATCH_S = 1.0  # a batch slower than this is logged (a sign of lock waits or an oversized batch)


@dataclass(eq=False)
class Unit:
    """One socket's piece of database work. ``kind`` names the service it runs; a unit with
    ``claim`` set also has its endpoint's outbox claimed at step 3 (``(endpoint_id, due_only)``;
    for a hello, the endpoint is known only once it is authenticated)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    claim: tuple[Any, bool] | None = None
    retries: int = 0

    @classmethod
    def hello(cls, *, hello, connection_id: str, remote_ip: str) -> Unit:
        """Outcome: ``services.Handshake`` with its frames (or ``HandshakeRefused``)."""
        return cls("hello", {"hello": hello, "connection_id": connection_id, "remote_ip": remote_ip})

    @classmethod
    def ack(cls, *, endpoint_id, message_id: str) -> Unit:
        return cls("ack", {"endpoint_id": endpoint_id, "message_id": message_id})

    @classmethod
    def frame(cls, *, endpoint, envelope) -> Unit:
        """Outcome: True when applied, False when its id was applied before (or ``UnsupportedMessage``)."""
        return cls("frame", {"endpoint": endpoint, "envelope": envelope})

    @classmethod
    def prompts(cls, *, endpoint, reports: list) -> Unit:
        return cls("prompts", {"endpoint": endpoint, "reports": reports})

    @classmethod
    def context(cls, *, endpoint, machine: dict) -> Unit:
        return cls("context", {"endpoint": endpoint, "machine": machine})

    @classmethod
    def deliver(cls, *, endpoint_id) -> Unit:
        """Claim what is due for an endpoint (its doorbell rang). Outcome: the frames to send."""
        return cls("deliver", claim=(endpoint_id, True))


def _run_unit(unit: Unit, acked: dict) -> Any:
    kw = unit.kwargs
    if unit.kind == "hello":
        handshake = services.agent_handshake(**kw, claim=False)
        unit.claim = (handshake.endpoint.pk, False)
        return handshake
    if unit.kind == "ack":
        key = (kw["endpoint_id"], kw["message_id"])
        return services.agent_ack_receive(**kw, found=acked.get(key))
    if unit.kind == "frame":
        return services.agent_frame_apply(**kw)
    if unit.kind == "prompts":
        return services.agent_prompts_report(**kw)
    if unit.kind == "context":
        return services.agent_context_record(**kw)
    if unit.kind == "deliver":
        return []
    raise ValueError(f"unknown unit kind {unit.kind!r}")


def apply_batch(units: list[Unit]) -> list[Any]:
    """Apply units in one transaction, each in a savepoint; returns one outcome per unit: its
    value, or the exception it raised (then nothing it wrote was kept). Synchronous: runs on the
    sync thread (``GroupCommit``) or in a test or benchmark directly."""
    outcomes: list[Any] = [None] * len(units)
    # A result records the bridge conditions: read once for every endpoint of the batch that sent a frame.
    ahead = services.ConditionsAhead([u.kwargs["endpoint"] for u in units if u.kind == "frame"])
    reset = services.conditions_ahead.set(ahead)
    judge: set = set()
    reset_judge = services.judge_later.set(judge)
    try:
        with transaction.atomic():
            acked = outbox.outbox_ack_targets(
                acks=[(u.kwargs["endpoint_id"], u.kwargs["message_id"]) for u in units if u.kind == "ack"]
            )
            for i, unit in enumerate(units):
                try:
                    with transaction.atomic():
                        outcomes[i] = _run_unit(unit, acked)
                except Exception as exc:
                    unit.claim = None
                    outcomes[i] = exc
            _judge(judge)
            _claim(units, outcomes)
    except Exception as exc:  # the commit (or the ack read) failed: nothing of the batch was kept
        log.exception("a batch of %d agent frames failed as a whole", len(units))
        return [exc] * len(units)
    finally:
        services.conditions_ahead.reset(reset)
        services.judge_later.reset(reset_judge)
    return outcomes


def _judge(endpoint_ids: set) -> None:
    """The connectivity of the endpoints whose acknowledgements were slow, judged together; a
    failure here loses no unit's work (the presence sweep judges them again)."""
    if not endpoint_ids:
        return
    try:
        with transaction.atomic():
            services.connectivity_judge_many(endpoint_ids=endpoint_ids)
    except Exception:
        log.exception("judging the connectivity of %d endpoints failed; the sweep judges them", len(endpoint_ids))


def _claim(units: list[Unit], outcomes: list[Any]) -> None:
    """Step 4: every claim of the batch in one go; a failure here loses no unit's work (the rows
    stay queued: the next doorbell or the outbox sweep sends them)."""
    requests = list(dict.fromkeys(u.claim for u in units if u.claim is not None))
    if not requests:
        return
    try:
        with transaction.atomic():
            frames = outbox.outbox_claim_many(requests=requests)
    except Exception:
        log.exception("claiming the outbox of %d endpoints failed; the sweep sends them later", len(requests))
        return
    for i, unit in enumerate(units):
        if unit.claim is None:
            continue
        claimed = frames.pop(unit.claim[0], [])  # a second unit of the same endpoint gets none twice
        if unit.kind == "hello":
            outcomes[i].frames = claimed
        else:
            outcomes[i] = claimed


class GroupCommit:
    """The drain task of one event loop (a Daphne process has one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[Unit, asyncio.Future]] = []
        self.wake = asyncio.Event()
        self.task = loop.create_task(self._run(), context=contextvars.Context())  # process-wide: no socket's state

    async def submit(self, unit: Unit) -> Any:
        future = self.loop.create_future()
        self.pending.append((unit, future))
        self.wake.set()
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                started = time.monotonic()
                try:
                    outcomes = await database_sync_to_async(apply_batch)([unit for unit, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # the trip to the sync thread itself failed
                    log.exception("applying a batch of agent frames failed")
                    outcomes = [exc] * len(batch)
                metrics.batches.inc()
                metrics.batched_units.inc(len(batch))
                took = time.monotonic() - started
                if took > SLOW_BATCH_S:
                    kinds = Counter(unit.kind for unit, _ in batch)
                    log.warning("a batch of %d agent frames took %.1f s (%s)", len(batch), took, dict(kinds))
                again = []
                for (unit, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its socket went away meanwhile
                        continue
                    if isinstance(outcome, Exception) and is_retryable(outcome) and unit.retries < RETRIES:
                        unit.retries += 1
                        again.append((unit, future))
                        continue
                    future.set_result(outcome)
                if again:  # ahead of what arrived meanwhile: an endpoint's frames keep their order
                    log.warning("%d agent frames met a deadlock; applying them again", len(again))
                    self.pending[:0] = again


_committers: dict[asyncio.AbstractEventLoop, GroupCommit] = {}


def committer() -> GroupCommit:
    """This event loop's group commit (made on first use; tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    current = _committers.get(loop)
    if current is None or current.task.done():
        for stale in [other for other in _committers if other.is_closed()]:
            del _committers[stale]
        current = _committers[loop] = GroupCommit(loop)
    return current


async def submit(unit: Unit) -> Any:
    """Apply ``unit`` in the next batch and return its outcome (raise what it raised)."""
    return await committer().submit(unit)
