"""Inserting thousands of rows whose primary keys are already set (a bulk run's sessions, actions,
outbox rows and transcript entries), without Django's per-row SQL assembly.

``QuerySet.bulk_create`` builds one statement per batch with a placeholder group per row, and
spends most of its time there: for a bulk run over 1,000 endpoints, 47 % of ``bulk_run_start``
was ``SQLInsertCompiler.as_sql`` (py-spy; bench/README.md). Here the statement is built once for
the model, each value is prepared exactly as ``bulk_create`` prepares it (``pre_save`` then
``get_db_prep_save``, so defaults, ``auto_now_add``, JSON and UUID adaptation are Django's), and
the rows go to the driver's ``executemany`` (sqlite3 and psycopg both run it natively).

For models whose primary key the caller sets (UUIDs, outbox ids): nothing is read back. No
signals are sent (neither does ``bulk_create``). Tenancy checks are the caller's, as
``caisey.tenancy.TenantScopedQuerySet.insert_many`` makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from django.db import connections, models, router


@cache
def _fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    fields = tuple(f for f in model._meta.concrete_fields if not f.generated)
    if any(isinstance(f, models.AutoField | models.BigAutoField | models.SmallAutoField) for f in fields):
        raise TypeError(f"{model.__name__} has a database-generated key: use bulk_create")
    return fields


def insert_rows(model: type[models.Model], objs: Sequence[models.Model], *, using: str | None = None) -> None:
    """INSERT ``objs`` (instances of ``model`` with their primary keys set) in one ``executemany``."""
    if not objs:
        return
    alias = using or router.db_for_write(model)
    connection = connections[alias]
    fields = _fields(model)
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = []
    for obj in objs:
        if obj.pk is None:
            raise ValueError(f"{model.__name__} without a primary key: insert_rows writes keys the caller set")
        obj._prepare_related_fields_for_save(operation_name="insert_rows")
        rows.append([f.get_db_prep_save(f.pre_save(obj, True), connection=connection) for f in fields])
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias
