"""The transcript is append-only and tamper-evident."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from sessions_app import db_guards
from sessions_app.models import TranscriptEntry
from sessions_app.services import sessions
from sessions_app.services.transcript import transcript_append
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def session():
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    tech = factories.technician(tenant)
    s = sessions.session_open(actor=tech, endpoint=endpoint, reason="T-1")
    sessions.session_add_note(actor=tech, session=s, text="first")
    sessions.session_add_note(actor=tech, session=s, text="second")
    return s


def test_entries_cannot_be_updated_or_deleted_through_the_orm(session):
    entry = TranscriptEntry.all_tenants.filter(session=session).first()
    entry.kind = "tampered"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        TranscriptEntry.all_tenants.filter(session=session).update(kind="x")
    with pytest.raises(PermissionError):
        TranscriptEntry.all_tenants.filter(session=session).delete()


def test_indexes_are_monotonic_and_chained(session):
    entries = list(TranscriptEntry.all_tenants.filter(session=session).order_by("index"))
    assert [e.index for e in entries] == [0, 1, 2]
    assert entries[1].prev_hash == entries[0].hash and entries[2].prev_hash == entries[1].hash


@pytest.mark.django_db(transaction=True)
def test_append_outside_a_transaction_is_refused(session):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        transcript_append(session=session, kind="x", actor="test")


def _raw_edit(entry, data: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TranscriptEntry._meta.db_table} SET data = %s WHERE id = %s",
            [data, entry._meta.pk.get_db_prep_value(entry.pk, connection)],
        )


def test_the_database_refuses_an_update_made_around_the_orm(session):
    entry = TranscriptEntry.all_tenants.get(session=session, index=1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _raw_edit(entry, '{"text": "nothing happened"}')
    assert TranscriptEntry.all_tenants.get(pk=entry.pk).data == {"text": "first"}


def test_verify_command_passes_then_names_the_first_altered_entry(session, capsys):
    call_command("verify_transcripts")
    assert "all intact" in capsys.readouterr().out
    second = TranscriptEntry.all_tenants.get(session=session, index=1)
    # What an attacker who owns the database would do: drop the guard, then edit (rolled back with the test).
    db_guards.remove(connection)
    _raw_edit(second, '{"text": "nothing happened"}')
    with pytest.raises(CommandError, match=rf"entry #1 \({second.pk}, note\) is bad: content does not match"):
        call_command("verify_transcripts")


def test_verify_detects_a_removed_entry(session):
    table = TranscriptEntry._meta.db_table
    first = TranscriptEntry.all_tenants.get(session=session, index=0)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [first._meta.pk.get_db_prep_value(first.pk, connection)])
    with pytest.raises(CommandError, match="is bad: index 1 where 0 was expected"):
        call_command("verify_transcripts")


def test_verify_detects_that_the_last_entries_were_removed(session):
    table = TranscriptEntry._meta.db_table
    last = TranscriptEntry.all_tenants.get(session=session, index=2)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [last._meta.pk.get_db_prep_value(last.pk, connection)])
    with pytest.raises(CommandError, match=r"entry #1 .* is bad: the record ends at entry #1 but held 3 entries"):
        call_command("verify_transcripts")
