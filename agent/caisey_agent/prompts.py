"""The runtime's prompt queue: the end user's view of approval prompts.

A prompt is recorded in the agent's SQLite before it is shown, so it survives a
restart or a sleeping laptop; the user decides through a desktop dialog when a
graphical session is there, or with `caisey-agent prompts` on any machine. The
running agent notices decisions (also those made by the CLI, another process)
and sends them as durable prompt.update frames; on every hello and heartbeat it
reports every prompt it holds, which is how the server converges on the truth.
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from dataclasses import dataclass

from caisey_agent import protocol as p

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    detail TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    organisation TEXT NOT NULL,
    deadline REAL NOT NULL,
    state TEXT NOT NULL,            -- delivered, acknowledged, approved, denied, withdrawn
    received_at REAL NOT NULL,
    seen_at REAL,
    decided_at REAL,
    decided_by TEXT NOT NULL DEFAULT '',
    reported_state TEXT NOT NULL DEFAULT '',  -- the last state sent as a prompt.update
    update_frame TEXT NOT NULL DEFAULT '',    -- id of that frame, until the server acks it
    update_acked INTEGER NOT NULL DEFAULT 0
);
"""

OPEN = ("delivered", "acknowledged")
DECIDED = ("approved", "denied")


class PromptRefused(Exception):
    pass


@dataclass
class HeldPrompt:
    prompt_id: str
    title: str
    detail: str
    requested_by: str
    organisation: str
    deadline: float
    state: str
    decided_at: float | None
    decided_by: str

    @property
    def expired(self) -> bool:
        return time.time() > self.deadline


class PromptStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def _rows(self, where: str = "1=1", args: tuple = ()) -> list[HeldPrompt]:
        rows = self.db.execute(
            "SELECT prompt_id, title, detail, requested_by, organisation, deadline, state, decided_at, decided_by"
            f" FROM prompts WHERE {where} ORDER BY received_at",
            args,
        ).fetchall()
        return [HeldPrompt(*row) for row in rows]

    # --- from the server -------------------------------------------------------------

    def store(self, show: p.PromptShow) -> bool:
        """Record before showing. False when this prompt is already held (a replay)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO prompts (prompt_id, title, detail, requested_by, organisation, deadline, state,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, 'delivered', ?)",
            (show.prompt_id, show.title, show.detail, show.requested_by, show.organisation, show.deadline, time.time()),
        )
        return cur.rowcount == 1

    def withdraw(self, prompt_id: str) -> None:
        """Take an undecided prompt down. A decision already made stays, to be reported: the
        server judges it (a decision made before the deadline is honoured even when the withdraw
        of an expired prompt reached a waking laptop first)."""
        self.db.execute(
            "UPDATE prompts SET state = 'withdrawn' WHERE prompt_id = ? AND state NOT IN (?, ?)", (prompt_id, *DECIDED)
        )

    # --- from the user ---------------------------------------------------------------------

    def find(self, prefix: str) -> HeldPrompt:
        matches = self._rows("prompt_id LIKE ?", (prefix + "%",))
        if not matches:
            raise PromptRefused(f"no prompt {prefix!r} on this machine")
        if len(matches) > 1:
            raise PromptRefused(f"{prefix!r} matches several prompts; give more of the id")
        return matches[0]

    def acknowledge(self, prompt_id: str) -> None:
        self.db.execute(
            "UPDATE prompts SET state = 'acknowledged', seen_at = ? WHERE prompt_id = ? AND state = 'delivered'",
            (time.time(), prompt_id),
        )

    def decide(self, prefix: str, *, approve: bool, by: str | None = None) -> HeldPrompt:
        prompt = self.find(prefix)
        if prompt.state == "withdrawn":
            raise PromptRefused("this request was withdrawn by the technician")
        if prompt.state in DECIDED:
            raise PromptRefused(f"already {prompt.state}")
        if prompt.expired:
            raise PromptRefused("the deadline to answer has passed")
        state = "approved" if approve else "denied"
        self.db.execute(
            "UPDATE prompts SET state = ?, decided_at = ?, decided_by = ? WHERE prompt_id = ? AND state IN (?, ?)",
            (state, time.time(), by or getpass.getuser(), prompt.prompt_id, *OPEN),
        )
        return self.find(prompt.prompt_id)

    def open_prompts(self) -> list[HeldPrompt]:
        return [row for row in self._rows("state IN (?, ?)", OPEN) if not row.expired]

    # --- back to the server -------------------------------------------------------------------

    def reports(self) -> list[p.PromptReport]:
        """Everything held that the server may still need to hear about."""
        rows = self._rows("state IN (?, ?) OR (state IN (?, ?) AND update_acked = 0)", (*OPEN, *DECIDED))
        return [
            p.PromptReport(prompt_id=r.prompt_id, state=r.state, decided_at=r.decided_at, decided_by=r.decided_by)
            for r in rows
        ]

    def unsent_updates(self) -> list[HeldPrompt]:
        """States the user changed (here or through the CLI) that no prompt.update carried yet."""
        return self._rows("state IN ('acknowledged', 'approved', 'denied') AND reported_state != state")

    def mark_sent(self, prompt_id: str, state: str, frame_id: str) -> None:
        self.db.execute(
            "UPDATE prompts SET reported_state = ?, update_frame = ?, update_acked = 0 WHERE prompt_id = ?",
            (state, frame_id, prompt_id),
        )

    def on_ack(self, frame_id: str) -> None:
        self.db.execute("UPDATE prompts SET update_acked = 1 WHERE update_frame = ?", (frame_id,))

    def update_for(self, prompt: HeldPrompt) -> p.PromptUpdate:
        return p.PromptUpdate(
            prompt_id=prompt.prompt_id, state=prompt.state, decided_at=prompt.decided_at, decided_by=prompt.decided_by
        )


def render(prompt: HeldPrompt) -> str:
    """The prompt for a terminal; control characters shown, not acted on (an ESC[8m in a command
    would hide the rest of the line from the person approving it)."""
    left = max(0, int(prompt.deadline - time.time()))
    v = p.visible
    return (
        f"[{prompt.prompt_id[:8]}] {v(prompt.title)}\n"
        f"    asked by {v(prompt.requested_by)} ({v(prompt.organisation)});"
        f" answer within {left // 60} min {left % 60} s\n"
        f"    will run: {v(prompt.detail)}\n"
        f"    state: {prompt.state}"
    )
