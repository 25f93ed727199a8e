"""The database itself refuses to change a transcript entry.

The ORM refuses too (models.AppendOnlyQuerySet), but anyone with a database shell could still run
an UPDATE; this trigger makes that an error as well. Deleting is not refused here (test databases
are emptied row by row between tests); a removed entry breaks the hash chain, and a removed last
entry no longer matches the length and head hash kept on its session (transcript_verify).

SQLite alters a table by rebuilding it, which drops its triggers: a migration that changes the
transcript table must call ``install`` again (0010 does).
"""

from __future__ import annotations

TABLE = "sessions_app_transcriptentry"
TRIGGER = "transcript_entries_are_append_only"
MESSAGE = "transcript entries are append-only: write a correction entry instead"

_INSTALL = {
    "sqlite": [
        f"""CREATE TRIGGER IF NOT EXISTS {TRIGGER} BEFORE UPDATE ON {TABLE}
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    ],
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$ LANGUAGE plpgsql""",
        f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}",
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()",
    ],
}
_REMOVE = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {TRIGGER}"],
    "postgresql": [f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}", f"DROP FUNCTION IF EXISTS {TRIGGER}()"],
}


def _run(connection, statements: dict[str, list[str]]) -> None:
    with connection.cursor() as cursor:
        for sql in statements.get(connection.vendor, []):  # other databases: the ORM guard only
            cursor.execute(sql)


def install(connection) -> None:
    _run(connection, _INSTALL)


def remove(connection) -> None:
    _run(connection, _REMOVE)
