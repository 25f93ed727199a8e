"""The agent's own durable state: one SQLite file, readable by its owner only.

How the folder is protected is the platform's business (:mod:`caisey_agent.platforms`):
mode bits on POSIX; on Windows a protected DACL (SYSTEM and Administrators) on the
folder, inherited by the files SQLite creates, and the credential encrypted with DPAPI.

It holds the endpoint identity, the ids of server events already acted on (so
a replayed ``action.run`` never runs twice), frames not yet acknowledged by the
server (replayed on reconnect), and the prompts the runtime holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from caisey_agent import platforms

SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS processed_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, frame TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
    run_token TEXT NOT NULL DEFAULT '', started_at REAL, finished_at REAL,
    error TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL,
    pid INTEGER, pid_created_at REAL
);
"""


@dataclass
class Identity:
    server: str
    endpoint_id: str
    credential: str
    machine_id: str
    tenant: str = ""
    client_group: str = ""
    # Set when enrolled with --hostname: the name reported instead of the OS hostname.
    hostname: str = ""
    # How to reach the server (caisey_agent/transport.py), as given at enrollment.
    insecure: bool = False  # --insecure: plain http(s) allowed to another machine
    ca_bundle: str = ""  # --ca-bundle: PEM file of the CAs to trust instead of the system's
    key_pin: str = ""  # --pin-key: sha256/<base64> of the server's public key


class AgentState:
    """Used from the agent's event loop thread only; each call is a short local transaction."""

    FILENAME = "agent.sqlite3"

    def __init__(self, state_dir: Path, *, platform: platforms.Platform | None = None) -> None:
        self.platform = platform or platforms.current()
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.platform.secure_dir(self.dir)
        self.path = self.dir / self.FILENAME
        fresh = not self.path.exists()
        # Create the file owner-only before SQLite opens it: the credential lives here.
        if fresh:
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.platform.secure_file(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._upgrade_actions_table()
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                self.platform.secure_file(side)

    def close(self) -> None:
        self.db.close()

    # --- identity -----------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM identity WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def machine_id(self) -> str:
        """A stable id for this machine's enrollment, created once per state folder."""
        value = self._get("machine_id")
        if value is None:
            value = uuid.uuid4().hex
            self.db.execute("INSERT INTO identity (key, value) VALUES ('machine_id', ?)", (value,))
        return value

    def identity(self) -> Identity | None:
        values = dict(self.db.execute("SELECT key, value FROM identity").fetchall())
        if "endpoint_id" not in values:
            return None
        return Identity(
            server=values["server"],
            endpoint_id=values["endpoint_id"],
            credential=self.platform.unprotect_secret(values["credential"]),
            machine_id=values["machine_id"],
            tenant=values.get("tenant", ""),
            client_group=values.get("client_group", ""),
            hostname=values.get("hostname", ""),
            insecure=str(values.get("insecure", "")) in ("1", "True"),
            ca_bundle=values.get("ca_bundle", ""),
            key_pin=values.get("key_pin", ""),
        )

    def save_identity(self, identity: Identity) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for key, value in identity.__dict__.items():
                if key == "credential":
                    value = self.platform.protect_secret(value)
                self.db.execute("INSERT OR REPLACE INTO identity (key, value) VALUES (?, ?)", (key, value))

    # --- events acted on --------------------------------------------------------------

    def record_event(self, event_id: str, event_type: str) -> bool:
        """Record a server event before acting on it. False when it was seen before."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO processed_events (id, type, received_at) VALUES (?, ?, ?)",
            (event_id, event_type, time.time()),
        )
        return cur.rowcount == 1

    def prune_events(self, older_than_s: float = 30 * 86400) -> None:
        self.db.execute("DELETE FROM processed_events WHERE received_at < ?", (time.time() - older_than_s,))

    # --- frames awaiting the server's ack -------------------------------------------------

    def outbox_add(self, frame_id: str, frame: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO outbox (id, frame, created_at) VALUES (?, ?, ?)", (frame_id, frame, time.time())
        )

    def outbox_ack(self, frame_id: str) -> bool:
        return self.db.execute("DELETE FROM outbox WHERE id = ?", (frame_id,)).rowcount == 1

    def outbox_pending(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT id, frame FROM outbox ORDER BY seq").fetchall()

    def outbox_depth(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def outbox_find_result(self, action_id: str) -> dict | None:
        """The body of an unacknowledged ``action.result`` frame for this action, if one waits in the outbox."""
        pattern = f'%"action_id":{json.dumps(action_id)}%'
        rows = self.db.execute(
            'SELECT frame FROM outbox WHERE frame LIKE \'%"type":"action.result"%\' AND frame LIKE ? ORDER BY seq',
            (pattern,),
        ).fetchall()
        for (frame,) in rows:
            try:
                env = json.loads(frame)
            except ValueError:
                continue
            if env.get("type") == "action.result" and env.get("body", {}).get("action_id") == action_id:
                return env["body"]
        return None

    # --- actions this agent ran (crash safety: an action never runs twice) ------------------

    def _upgrade_actions_table(self) -> None:
        """Columns added to the actions table after it first shipped."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(actions)")}
        for column, decl in (("pid", "INTEGER"), ("pid_created_at", "REAL")):
            if column not in have:
                self.db.execute(f"ALTER TABLE actions ADD COLUMN {column} {decl}")

    def action_get(self, action_id: str) -> dict | None:
        row = self.db.execute(
            "SELECT action_id, kind, status, run_token, started_at, finished_at, error, pid, pid_created_at"
            " FROM actions WHERE action_id = ?",
            (action_id,),
        ).fetchone()
        if row is None:
            return None
        keys = (
            "action_id",
            "kind",
            "status",
            "run_token",
            "started_at",
            "finished_at",
            "error",
            "pid",
            "pid_created_at",
        )
        return dict(zip(keys, row, strict=False))

    def action_begin(self, action_id: str, kind: str, run_token: str, started_at: float) -> bool:
        """Record an action as running before it starts. False when this action id was seen before."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO actions (action_id, kind, status, run_token, started_at, updated_at)"
            " VALUES (?, ?, 'running', ?, ?, ?)",
            (action_id, kind, run_token, started_at, time.time()),
        )
        return cur.rowcount == 1

    def action_set_process(self, action_id: str, pid: int, created_at: float | None) -> None:
        """The process an action started, so that a restarted agent can stop what a crash left behind."""
        self.db.execute(
            "UPDATE actions SET pid = ?, pid_created_at = ?, updated_at = ? WHERE action_id = ?",
            (pid, created_at, time.time(), action_id),
        )

    def action_finish(
        self, action_id: str, status: str, *, finished_at: float, error: str = "", kind: str = ""
    ) -> None:
        """Record an action's final status (inserting the row when it never started, e.g. refused)."""
        self.db.execute(
            "INSERT INTO actions (action_id, kind, status, finished_at, error, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(action_id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,"
            " error = excluded.error, updated_at = excluded.updated_at",
            (action_id, kind, status, finished_at, error[:2000], time.time()),
        )

    def action_cancel_requested(self, action_id: str) -> bool:
        """Remember a cancel for an action not seen yet, so a late ``action.run`` for it never runs."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO actions (action_id, kind, status, updated_at) VALUES (?, '', 'cancel_requested', ?)",
            (action_id, time.time()),
        )
        return cur.rowcount == 1

    def action_claim_cancelled(self, action_id: str, kind: str, finished_at: float) -> bool:
        """Turn a remembered cancel into the action's final 'cancelled' status. False when there was none."""
        cur = self.db.execute(
            "UPDATE actions SET status = 'cancelled', kind = ?, finished_at = ?, updated_at = ?,"
            " error = 'cancelled before it started' WHERE action_id = ? AND status = 'cancel_requested'",
            (kind, finished_at, time.time(), action_id),
        )
        return cur.rowcount == 1

    def actions_running(self, *, exclude_run_token: str = "") -> list[dict]:
        """Actions recorded as running, except those started by the process holding ``exclude_run_token``."""
        rows = self.db.execute(
            "SELECT action_id FROM actions WHERE status = 'running' AND run_token != ? ORDER BY started_at",
            (exclude_run_token,),
        ).fetchall()
        return [self.action_get(action_id) for (action_id,) in rows]

    def prune_actions(self, older_than_s: float = 30 * 86400) -> None:
        self.db.execute(
            "DELETE FROM actions WHERE status != 'running' AND updated_at < ?", (time.time() - older_than_s,)
        )

    def dump(self) -> dict:
        ident = self.identity()
        return {
            "state_file": str(self.path),
            "enrolled": ident is not None,
            "endpoint_id": ident.endpoint_id if ident else None,
            "server": ident.server if ident else None,
            "tenant": ident.tenant if ident else None,
            "client_group": ident.client_group if ident else None,
            "key_pin": ident.key_pin if ident else None,
            "insecure": ident.insecure if ident else None,
            "unacknowledged_frames": self.outbox_depth(),
        }

    def to_json(self) -> str:
        return json.dumps(self.dump(), indent=2)
