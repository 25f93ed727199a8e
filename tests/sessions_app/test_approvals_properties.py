"""Approval prompts under a hostile network: a Hypothesis stateful test of the prompt rules
"Approval prompts: one state machine, three views".

The model
---------
- Console: the real server services (``action_request`` and ``batch_request`` gated by a
  shell policy, ``prompt_cancel``, ``prompt_reissue``, ``prompt_resend``, ``action_cancel``),
  on the real database.
- Bridge: the real outbox (``outbox_claim``, ``outbox_ack``, ``outbox_sweep``), the real
  handshake (``agent_handshake``/``agent_disconnected``), the real frame path
  (``agent_frame_apply``, which dedupes by envelope id and calls ``prompt_runtime_update``)
  and the real reconciliation (``agent_prompts_report`` -> ``prompt_runtime_report``).
  Between server and runtime sits a simulated network: two in-flight lists (``down``:
  server -> runtime frames and acks, ``up``: runtime -> server frames, acks and heartbeats).
  Rules deliver any in-flight message (so reorders), drop it, or duplicate it. A restart of
  either party or of the connection loses everything in flight; outbox rows stay.
- Runtime: mirrors the agent's durable rules. It records a prompt before showing it, ignores a
  ``prompt.show`` for a prompt it already holds (or was told to withdraw), dedupes server events
  by envelope id, keeps its own ``prompt.update`` frames until the server acks them and replays
  them on reconnect, and reports every prompt it holds on hello and heartbeat. The user may
  acknowledge, approve or deny a held, undecided, not-withdrawn prompt before its deadline.
  A reinstall (or a disk restored from an old image) wipes that durable state, which is what
  the server's replay rule exists for.
- Time: a virtual clock (``django.utils.timezone.now`` shifted by an offset) that rules move
  forward, shared by server and runtime; deadlines then pass for everyone at once, and the
  deadline sweep and the outbox sweep run as rules.

Checked after every step: every recorded transition is in PROMPT_TRANSITIONS and the history
chains; every prompt only moves along the table (so cancelled/superseded never resolve); an
action is authorised (an ``action.run`` exists or it left awaiting_approval for a live status)
only by a prompt that reached ``approved`` from an open state; a decision attributed to the
runtime is the one the user made; an action never waits for approval with no open prompt left.
At the end (teardown) the network heals (everything flows in order, no loss, the periodic sweeps
run, the runtime reconnects and reports) and the three views must agree, prompt by prompt.

A failure raises ``Violation`` naming the broken rule and the prompt's server state, runtime view
and recorded history; Hypothesis prints the shortened sequence of steps that leads there.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from unittest import mock

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bridge import outbox
from bridge import services as bridge_services
from bridge.models import OutboxMessage, OutboxStatus
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import (
    PROMPT_OPEN,
    PROMPT_TRANSITIONS,
    Action,
    ActionStatus,
    Prompt,
    PromptParty,
    PromptState,
    PromptTransition,
    TranscriptEntry,
)
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts
from sessions_app.services import sessions
from tests import factories

S = PromptState
_real_now = timezone.now

# States reachable from each state by zero or more allowed transitions.
REACHABLE: dict[str, set[str]] = {}
for _start in PROMPT_TRANSITIONS:
    seen, todo = {_start}, [_start]
    while todo:
        for nxt in PROMPT_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    REACHABLE[_start] = seen

# An action in one of these has been let go by its approval (or is on its way to the endpoint).
AUTHORISED_STATUSES = {
    ActionStatus.QUEUED,
    ActionStatus.DISPATCHED,
    ActionStatus.RUNNING,
    ActionStatus.SUCCEEDED,
    ActionStatus.FAILED,
    ActionStatus.TIMED_OUT,
    ActionStatus.FAILED_TO_DELIVER,
}
NEVER_AUTHORISES = {S.CANCELLED, S.SUPERSEDED, S.DENIED, S.EXPIRED}


class Violation(AssertionError):
    """A rule of the approval prompt state machine (docs/architecture.md) does not hold."""


class Clock:
    """Real time shifted by an offset that rules move forward: deadlines pass for everyone."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self):
        return _real_now() + self.offset

    def ts(self) -> float:
        return self.now().timestamp()


# --- the runtime --------------------------------------------------------------------------------


@dataclass
class Held:
    """One prompt in the runtime's durable store."""

    deadline: float = 0.0
    received: bool = True  # False: a withdraw arrived before the show (a tombstone)
    seen: bool = False
    decision: str | None = None
    decided_at: float | None = None
    decision_frame: str = ""
    withdrawn: bool = False

    @property
    def live(self) -> bool:
        return self.received and not self.withdrawn and self.decision is None


@dataclass
class Runtime:
    """The endpoint runtime: durable state survives restarts, the socket does not."""

    prompts: dict[str, Held] = field(default_factory=dict)
    processed: set[str] = field(default_factory=set)  # server envelope ids acted on
    unacked: dict[str, p.Envelope] = field(default_factory=dict)  # our frames awaiting the server's ack
    ran: set[str] = field(default_factory=set)  # action ids the endpoint ran
    lost: dict[str, list[Held]] = field(default_factory=dict)  # records a reinstall wiped, for the checks

    def reinstall(self) -> None:
        for pid, held in self.prompts.items():
            self.lost.setdefault(pid, []).append(held)
        self.prompts, self.processed, self.unacked = {}, set(), {}

    def decisions(self, prompt_id: str) -> set[str]:
        """Every decision the user ever made on this prompt, including ones a reinstall wiped."""
        records = self.lost.get(prompt_id, []) + ([self.prompts[prompt_id]] if prompt_id in self.prompts else [])
        return {h.decision for h in records if h.decision}

    def receive(self, env: p.Envelope) -> list[tuple]:
        """Handle one server frame; returns what goes back up (an ack)."""
        if env.type == p.Ack.TYPE:
            self.unacked.pop(env.body.ref, None)
            return []
        first_time = env.id not in self.processed
        self.processed.add(env.id)
        if first_time:
            body = env.body
            if env.type == p.PromptShow.TYPE:
                if body.prompt_id not in self.prompts:  # recorded before shown; a second show is ignored
                    self.prompts[body.prompt_id] = Held(deadline=body.deadline)
            elif env.type == p.PromptWithdraw.TYPE:
                self.prompts.setdefault(body.prompt_id, Held(received=False)).withdrawn = True
            elif env.type == p.ActionRun.TYPE:
                self.ran.add(body.action_id)
        return [("ack", env.id)]

    def decidable(self, now: float) -> list[str]:
        return [pid for pid, h in self.prompts.items() if h.live and now < h.deadline]

    def update(self, prompt_id: str, state: str, decided_at: float | None = None) -> p.Envelope:
        env = p.envelope(
            p.PromptUpdate(
                prompt_id=prompt_id, state=state, decided_at=decided_at, decided_by="alice" if decided_at else ""
            )
        )
        self.unacked[env.id] = env
        return env

    def report(self) -> list[p.PromptReport]:
        out = []
        for pid, h in self.prompts.items():
            if h.live:
                out.append(p.PromptReport(prompt_id=pid, state=S.ACKNOWLEDGED if h.seen else S.DELIVERED))
            elif h.decision and h.decision_frame in self.unacked:
                out.append(p.PromptReport(prompt_id=pid, state=h.decision, decided_at=h.decided_at))
        return out

    def view(self, prompt_id: str) -> str:
        h = self.prompts.get(prompt_id)
        if prompt_id in self.lost:
            return f"{self._view(h)}; before a reinstall: {[self._view(old) for old in self.lost[prompt_id]]}"
        return self._view(h)

    @staticmethod
    def _view(h: Held | None) -> str:
        if h is None or not h.received:
            return "never received" + (" (withdrawn)" if h else "")
        if h.decision:
            return f"decided {h.decision}" + (" (withdrawn)" if h.withdrawn else "")
        if h.withdrawn:
            return "withdrawn"
        return "holds it, seen" if h.seen else "holds it, unseen"


# --- the machine ------------------------------------------------------------------------------


def pick(items, index):
    return items[index % len(items)]


class PromptMachine(RuleBasedStateMachine):
    """Console, bridge and runtime under random interleavings; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._patches = [
            mock.patch.object(timezone, "now", self.clock.now),
            mock.patch("bridge.notify._send_many", lambda items: None),  # the network is simulated here
            override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]),
        ]
        for patch in self._patches:
            patch.__enter__()
        self.runtime = Runtime()
        self.down: list[p.Envelope] = []
        self.up: list[tuple] = []
        self.connection_id = ""
        self.prompt_ids: list[str] = []
        self.observed: dict[str, str] = {}
        self.commands = 0
        self.ready = False

    @initialize(deadline_s=st.sampled_from([60, 300]), first=st.lists(st.booleans(), min_size=1, max_size=3))
    def world(self, deadline_s: int, first: list[bool]) -> None:
        """A tenant with a shell-approval policy, a connected endpoint, a session, and a few requests."""
        tenant = factories.tenant()
        group = factories.client_group(tenant)
        factories.policy(group, requires="shell", deadline_s=deadline_s)
        self.enrolled = factories.endpoint(group)
        self.endpoint = self.enrolled.endpoint
        self.tech = factories.technician(tenant)
        self.session = sessions.session_open(actor=self.tech, endpoint=self.endpoint, reason="property test")
        self.tenant = tenant
        self.ready = True
        self.runtime_connects()
        for batch in first:
            self.technician_requests_shell(batch)

    def teardown(self) -> None:
        try:
            if self.ready and sys.exc_info()[0] is None:
                self.heal_and_check_convergence()
        finally:
            try:
                if self.ready:  # keep later examples' global sweeps to their own rows
                    OutboxMessage.all_tenants.filter(endpoint=self.endpoint, status=OutboxStatus.QUEUED).update(
                        status=OutboxStatus.CANCELLED
                    )
                    Prompt.all_tenants.filter(tenant=self.tenant, state__in=PROMPT_OPEN).update(state=S.CANCELLED)
            finally:
                for patch in reversed(self._patches):
                    patch.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.connection_id)

    def _send_up(self, env: p.Envelope) -> None:
        if self.connected:
            self.up.append(("frame", env))

    def _track_new_prompts(self) -> None:
        known = set(self.prompt_ids)
        for pk in Prompt.all_tenants.filter(session=self.session).order_by("created_at").values_list("pk", flat=True):
            if str(pk) not in known:
                self.prompt_ids.append(str(pk))

    def _prompt(self, index: int) -> Prompt:
        return Prompt.all_tenants.get(pk=pick(self.prompt_ids, index))

    def _lose_in_flight(self) -> None:
        self.down.clear()
        self.up.clear()
        if self.connected:
            bridge_services.agent_disconnected(
                endpoint_id=self.endpoint.pk, connection_id=self.connection_id, close_code=1006
            )
        self.connection_id = ""

    def _claim(self, *, due_only: bool) -> None:
        for frame in outbox.outbox_claim(endpoint_id=self.endpoint.pk, due_only=due_only):
            self.down.append(p.decode(frame, accept=p.SERVER_TO_AGENT, max_bytes=p.MAX_FRAME_BYTES * 4))

    def _apply_up(self, item: tuple) -> None:
        kind, payload = item
        if kind == "frame":
            bridge_services.agent_frame_apply(endpoint=self.endpoint, envelope=payload)
            self.down.append(p.envelope(p.Ack(ref=payload.id)))
        elif kind == "ack":
            outbox.outbox_ack(endpoint_id=self.endpoint.pk, message_id=payload)
        elif kind == "heartbeat":
            Endpoint.all_tenants.filter(pk=self.endpoint.pk).update(last_seen_at=timezone.now())
            bridge_services.agent_prompts_report(endpoint=self.endpoint, reports=payload)

    def _apply_down(self, env: p.Envelope) -> None:
        self.up.extend(self.runtime.receive(env))

    # --- console -----------------------------------------------------------------------------

    @precondition(lambda self: self.commands < 5)
    @rule(batch=st.booleans())
    def technician_requests_shell(self, batch: bool) -> None:
        """A shell command (alone, or first step of a batch) that the policy holds for approval."""
        self.commands += 1
        if batch:
            services.batch_request(
                actor=self.tech,
                session=self.session,
                items=[("shell", {"command": f"echo step-{self.commands}"}), ("system_summary", {})],
            )
        else:
            services.action_request(
                actor=self.tech, session=self.session, kind="shell", params={"command": f"echo {self.commands}"}
            )
        self._track_new_prompts()
        self._doorbell()

    @precondition(lambda self: self.prompt_ids)
    @rule(index=st.integers(0, 20), act=st.sampled_from(["cancel", "reissue", "resend", "cancel action"]))
    def technician_acts_on_prompt(self, index: int, act: str) -> None:
        """Cancel, reissue or resend a prompt, or cancel the action it gates; refusals are fine."""
        prompt = self._prompt(index)
        try:
            if act == "cancel action":
                if prompt.action_id:
                    services.action_cancel(actor=self.tech, action=Action.all_tenants.get(pk=prompt.action_id))
            else:
                {"cancel": prompts.prompt_cancel, "reissue": prompts.prompt_reissue, "resend": prompts.prompt_resend}[
                    act
                ](actor=self.tech, prompt=prompt)
        except (prompts.PromptError, sessions.SessionError):
            pass  # not allowed from where it is now: the console refuses, nothing changes
        self._track_new_prompts()
        self._doorbell()

    # --- bridge --------------------------------------------------------------------------------

    def _doorbell(self) -> None:
        """After a commit the connection serving the agent claims what is due."""
        if self.connected:
            self._claim(due_only=True)

    @rule(exhaust=st.sampled_from([None, None, None, 0, 1, 2]))
    def outbox_sweep(self, exhaust: int | None = None) -> None:
        """The periodic sweep with every queued row due; ``exhaust`` spends one prompt.show's retries."""
        queued = OutboxMessage.all_tenants.filter(endpoint=self.endpoint, status=OutboxStatus.QUEUED)
        shows = list(queued.filter(kind=p.PromptShow.TYPE).order_by("created_at"))
        if exhaust is not None and shows:
            message = pick(shows, exhaust)
            OutboxMessage.all_tenants.filter(pk=message.pk).update(attempts=message.max_attempts)
        queued.update(next_attempt_at=timezone.now())
        outbox.outbox_sweep()
        self._doorbell()

    # --- the network ------------------------------------------------------------------------------

    FATES = st.sampled_from(["deliver", "deliver", "deliver", "lose", "duplicate"])

    @precondition(lambda self: self.down)
    @rule(index=st.integers(0, 20), fate=FATES)
    def network_to_runtime(self, index: int, fate: str) -> None:
        """Server -> runtime: any in-flight frame (so out of order) is delivered, lost or duplicated."""
        i = index % len(self.down)
        if fate == "duplicate":
            self.down.append(self.down[i])
            return
        env = self.down.pop(i)
        if fate == "deliver":
            self._apply_down(env)

    @precondition(lambda self: self.up)
    @rule(index=st.integers(0, 20), fate=FATES)
    def network_to_server(self, index: int, fate: str) -> None:
        """Runtime -> server: likewise for updates, acks and heartbeats."""
        i = index % len(self.up)
        if fate == "duplicate":
            self.up.append(self.up[i])
            return
        item = self.up.pop(i)
        if fate == "deliver":
            self._apply_up(item)

    @precondition(lambda self: self.up or self.down)
    @rule()
    def network_flows(self) -> None:
        """A quiet spell: everything in flight arrives, in order, in both directions."""
        up, down = self.up[:], self.down[:]
        self.up.clear()
        self.down.clear()
        for item in up:
            self._apply_up(item)
        for env in down:
            self._apply_down(env)

    # --- restarts and connections -------------------------------------------------------------------

    @precondition(lambda self: not self.connected)
    @rule()
    def runtime_connects(self) -> None:
        """hello with the held prompts; the server reconciles, then sends everything waiting."""
        self.connection_id = p.new_id()
        hello = p.Hello(
            endpoint_id=str(self.endpoint.pk),
            credential=self.enrolled.credential,
            agent_version="prop",
            prompts=self.runtime.report(),
        )
        handshake = bridge_services.agent_handshake(
            hello=hello, connection_id=self.connection_id, remote_ip="192.0.2.1"
        )
        self.down.extend(
            p.decode(frame, accept=p.SERVER_TO_AGENT, max_bytes=p.MAX_FRAME_BYTES * 4) for frame in handshake.frames
        )
        self.up.extend(("frame", env) for env in self.runtime.unacked.values())  # replay, oldest first

    @precondition(lambda self: self.connected)
    @rule()
    def runtime_heartbeat(self) -> None:
        self.up.append(("heartbeat", self.runtime.report()))

    @precondition(lambda self: self.connected)
    @rule(who=st.sampled_from(["runtime", "server", "network"]))
    def restart(self, who: str) -> None:
        """The runtime or the server restarts, or the socket drops: everything in flight is lost.
        The runtime keeps its durable state (prompts, unacked updates, event ids); the server its outbox."""
        self._lose_in_flight()

    @rule()
    def runtime_reinstalled(self) -> None:
        """The agent is reinstalled or its disk restored from an old image: its durable state is gone."""
        self._lose_in_flight()
        self.runtime.reinstall()

    # --- the end user -----------------------------------------------------------------------------------

    def _decidable(self) -> list[str]:
        return self.runtime.decidable(self.clock.ts())

    @precondition(lambda self: self._decidable())
    @rule(index=st.integers(0, 20))
    def user_sees(self, index: int) -> None:
        """The user looks at a held, undecided, not withdrawn prompt before its deadline."""
        pid = pick(self._decidable(), index)
        held = self.runtime.prompts[pid]
        if not held.seen:
            held.seen = True
            self._send_up(self.runtime.update(pid, S.ACKNOWLEDGED))

    def _decide(self, index: int, decision: str) -> None:
        now = self.clock.ts()
        pid = pick(self._decidable(), index)
        held = self.runtime.prompts[pid]
        held.decision, held.decided_at = decision, now
        env = self.runtime.update(pid, decision, decided_at=now)
        held.decision_frame = env.id
        self._send_up(env)

    @precondition(lambda self: self._decidable())
    @rule(index=st.integers(0, 20))
    def user_approves(self, index: int) -> None:
        self._decide(index, S.APPROVED)

    @precondition(lambda self: self._decidable())
    @rule(index=st.integers(0, 20))
    def user_denies(self, index: int) -> None:
        self._decide(index, S.DENIED)

    # --- time ------------------------------------------------------------------------------------------

    @rule(
        step=st.sampled_from([5, 30, 120, "past a deadline"]),
        index=st.integers(0, 20),
        sweep=st.sampled_from([True, True, False]),
    )
    def time_passes(self, step, index: int, sweep: bool) -> None:
        """The clock moves by some seconds, or just past an open prompt's deadline; the deadline sweep
        usually runs (it is periodic, so a deadline may also pass unswept for a while)."""
        if step == "past a deadline":
            open_ = list(
                Prompt.all_tenants.filter(
                    session=self.session, state__in=PROMPT_OPEN, deadline_at__gt=timezone.now()
                ).order_by("created_at")
            )
            if open_:
                self.clock.offset += pick(open_, index).deadline_at - timezone.now() + timedelta(seconds=1)
        else:
            self.clock.offset += timedelta(seconds=step)
        if sweep:
            prompts.prompt_deadline_sweep()
            prompts.prompt_reach_sweep()
            self._doorbell()

    # --- invariants -------------------------------------------------------------------------------------

    def describe(self, prompt_id: str) -> str:
        prompt = Prompt.all_tenants.get(pk=prompt_id)
        history = ", ".join(
            f"{t.from_state}->{t.to_state} by {t.party} ({t.detail})"
            for t in PromptTransition.all_tenants.filter(prompt_id=prompt_id).order_by("id")
        )
        return (
            f"prompt {prompt_id} [server: {prompt.state}; runtime: {self.runtime.view(prompt_id)}; "
            f"history: {history or 'none'}]"
        )

    @invariant()
    def design_rules_hold(self) -> None:
        """Checked after every step (one invariant, so a failing example prints one line per step)."""
        self.transitions_follow_the_table()
        self.only_approved_prompts_authorise_actions()
        self.decisions_come_from_the_user()

    def transitions_follow_the_table(self) -> None:
        chains: dict[str, str] = {}
        for t in PromptTransition.all_tenants.filter(prompt__session=self.session).order_by("id"):
            pid = str(t.prompt_id)
            if t.to_state not in PROMPT_TRANSITIONS[t.from_state]:
                raise Violation(
                    f"recorded transition {t.from_state}->{t.to_state} is not in PROMPT_TRANSITIONS: "
                    + self.describe(pid)
                )
            if chains.get(pid, S.PENDING) != t.from_state:
                raise Violation(
                    f"history does not chain ({chains.get(pid, S.PENDING)} then {t.from_state}): " + self.describe(pid)
                )
            chains[pid] = t.to_state
        for pid, state in Prompt.all_tenants.filter(session=self.session).values_list("pk", "state"):
            pid = str(pid)
            if chains.get(pid, S.PENDING) != state:
                raise Violation(f"state {state} was reached without a recorded transition: " + self.describe(pid))
            before = self.observed.get(pid, S.PENDING)
            if state not in REACHABLE[before]:
                raise Violation(
                    f"prompt moved {before} -> {state}, which the table does not allow "
                    "(a cancelled/superseded/decided prompt resolved later?): " + self.describe(pid)
                )
            self.observed[pid] = state

    def only_approved_prompts_authorise_actions(self) -> None:
        runs = set(
            OutboxMessage.all_tenants.filter(endpoint=self.endpoint, kind=p.ActionRun.TYPE).values_list(
                "ref_id", flat=True
            )
        )
        prompt_rows = list(
            Prompt.all_tenants.filter(session=self.session).values(
                "pk", "state", "action_id", "batch_id", "decided_at", "deadline_at"
            )
        )
        approved_from = dict(
            PromptTransition.all_tenants.filter(prompt__session=self.session, to_state=S.APPROVED).values_list(
                "prompt_id", "from_state"
            )
        )
        released_by: dict[str, list[str]] = {}
        for aid, data in TranscriptEntry.all_tenants.filter(session=self.session, kind="action.approved").values_list(
            "action_id", "data"
        ):
            released_by.setdefault(str(aid), []).append(data["prompt"])
        for action in Action.all_tenants.filter(session=self.session).values(
            "pk", "status", "batch_id", "rerun_of_id", "rerun_of__batch_id"
        ):
            aid = str(action["pk"])
            # A rerun runs the request an expired prompt held, with the approval recorded late.
            rerun = action["rerun_of_id"] is not None
            asked_pk = action["rerun_of_id"] if rerun else action["pk"]
            asked_batch = action["rerun_of__batch_id"] if rerun else action["batch_id"]
            gating = [
                row
                for row in prompt_rows
                if (row["batch_id"] == asked_batch if asked_batch else row["action_id"] == asked_pk)
            ]
            states = sorted({row["state"] for row in gating})
            if action["status"] == ActionStatus.AWAITING_APPROVAL and not set(states) & PROMPT_OPEN:
                raise Violation(
                    f"action {aid} still awaits approval but none of its prompts is open ({states}): "
                    "it can never run nor end (DESIGN: denied/expired/cancelled stop it)"
                )
            if aid not in runs and action["status"] not in AUTHORISED_STATUSES:
                continue
            if aid in runs and states and set(states) <= NEVER_AUTHORISES:
                raise Violation(
                    f"action {aid} has an action.run although every prompt for it is {states} "
                    "(DESIGN: runs only after approved, never after cancelled/superseded/expired)"
                )
            if not released_by.get(aid):
                raise Violation(
                    f"action {aid} is {action['status']} (action.run: {aid in runs}) without an approval "
                    f"releasing it; its prompts are {states}"
                )
            for pid in released_by[aid]:
                row = next((row for row in gating if str(row["pk"]) == pid), None)
                state = row["state"] if row else None
                # DESIGN: a decision made before the deadline is honoured even when it arrives after
                # the prompt expired; its request then runs again as a rerun of the expired action.
                late_in_time = (
                    rerun
                    and row is not None
                    and approved_from.get(uuid.UUID(pid)) == S.EXPIRED
                    and row["decided_at"] is not None
                    and row["decided_at"] <= row["deadline_at"]
                )
                if state != S.APPROVED or not (approved_from.get(uuid.UUID(pid)) in PROMPT_OPEN or late_in_time):
                    raise Violation(
                        f"action {aid} was released by a prompt that is not validly approved "
                        "(DESIGN: an action runs only after approved, never after the prompt was "
                        "cancelled, superseded or expired): " + self.describe(pid)
                    )

    def decisions_come_from_the_user(self) -> None:
        for prompt in Prompt.all_tenants.filter(session=self.session, state__in=[S.APPROVED, S.DENIED]):
            if prompt.state_changed_by == PromptParty.RUNTIME and prompt.state not in self.runtime.decisions(
                str(prompt.pk)
            ):
                raise Violation(
                    "the server records a runtime decision the user never made: " + self.describe(str(prompt.pk))
                )

    # --- the end: let messages flow, then the three views must agree -----------------------------------

    def _quiet(self) -> bool:
        queued = OutboxMessage.all_tenants.filter(endpoint=self.endpoint, status=OutboxStatus.QUEUED).exists()
        return not (self.up or self.down or self.runtime.unacked or queued)

    def heal_and_check_convergence(self) -> None:
        for _ in range(10):
            if not self.connected:
                self.runtime_connects()
            while self.up or self.down:
                while self.up:
                    self._apply_up(self.up.pop(0))
                while self.down:
                    self._apply_down(self.down.pop(0))
            # The server's periodic work and one heartbeat, as a live connection would have.
            self.outbox_sweep(None)
            prompts.prompt_deadline_sweep()
            self.runtime_heartbeat()
            self._apply_up(self.up.pop())
            self._claim(due_only=False)
            self.up.extend(("frame", env) for env in self.runtime.unacked.values())
            if self._quiet():
                break
        self.design_rules_hold()
        problems = []
        if not self._quiet():
            left = list(
                OutboxMessage.all_tenants.filter(endpoint=self.endpoint, status=OutboxStatus.QUEUED).values_list(
                    "kind", "ref_id", "attempts"
                )
            )
            problems.append(
                f"messages never settle: queued outbox rows {left}, runtime unacked {len(self.runtime.unacked)}"
            )
        for pid in self.prompt_ids:
            problems += self._disagreement(pid)
        if problems:
            raise Violation("the three views did not converge once messages flowed again:\n  " + "\n  ".join(problems))

    def _disagreement(self, pid: str) -> list[str]:
        prompt = Prompt.all_tenants.get(pk=pid)
        held = self.runtime.prompts.get(pid)
        live = held is not None and held.live
        server = prompt.state
        why = None
        if server in (S.DELIVERED, S.ACKNOWLEDGED) and not live:
            why = "the server thinks the user is looking at it; the runtime does not hold it (replay rule)"
        elif live and server not in (S.DELIVERED, S.ACKNOWLEDGED):
            why = "the runtime still shows a prompt the server has ended or never saw delivered (withdraw rule)"
        elif live and held.seen and server != S.ACKNOWLEDGED:
            why = "the user saw it but the server does not record acknowledged (runtime wins for acknowledged)"
        elif live and server == S.ACKNOWLEDGED and not held.seen and pid not in self.runtime.lost:
            why = "the server records acknowledged but the user never saw it"
        elif server == S.PENDING:
            why = "still pending although its prompt.show could flow (bridge wins for delivery)"
        elif held is not None and held.decision and server != held.decision:
            if server in (S.CANCELLED, S.SUPERSEDED):
                if not held.withdrawn:
                    why = "a late decision on a cancelled/superseded prompt: the runtime was never told to withdraw"
            elif server in (S.APPROVED, S.DENIED):
                if not held.withdrawn:  # only reachable when the runtime lost its state and showed it again
                    why = (
                        f"the user {held.decision} a prompt the server had already {server} (shown again after "
                        "the runtime lost its state); the server kept the first decision but never told the "
                        "runtime to withdraw it, so the runtime believes its decision stands"
                    )
            else:
                why = (
                    f"the user {held.decision} it before the deadline; the server says {server} "
                    "(runtime wins for decisions, honoured even when late)"
                )
        elif server in (S.APPROVED, S.DENIED) and server not in self.runtime.decisions(pid):
            why = "the server has a decision the runtime never made"
        return [f"{why}: {self.describe(pid)}"] if why else []


# CAISEY_PROMPT_EXAMPLES=500 searches longer (say, nightly); the default keeps the suite near a minute.
PromptMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CAISEY_PROMPT_EXAMPLES", "50")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
TestPrompts = pytest.mark.django_db(transaction=True)(PromptMachine.TestCase)


@pytest.mark.django_db(transaction=True)
def test_prompt_decided_again_after_runtime_lost_its_state_converges():
    """A divergence the machine once found, replayed step by step: the show's ack is lost, the user
    approves (the server records it), the runtime is reinstalled. The decided prompt's show message
    is no longer retried, so the reinstalled runtime is not asked again and the views converge."""
    state = PromptMachine()
    try:
        state.world(deadline_s=300, first=[False])  # in flight to the runtime: mode.set, prompt.show
        state.network_to_runtime(index=0, fate="deliver")
        state.network_to_runtime(index=0, fate="deliver")
        state.network_to_server(index=1, fate="lose")  # the runtime's ack of the prompt.show
        state.user_approves(index=0)
        state.network_flows()
        state.network_flows()
        state.design_rules_hold()
        state.runtime_reinstalled()
        state.runtime_connects()
        assert not [env for env in state.down if isinstance(env.body, p.PromptShow)], "a decided prompt was shown again"
        state.design_rules_hold()
    finally:
        state.teardown()  # heals the network and checks convergence (skipped if a step failed)
