"""The transcript is append-only and tamper-evident."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from sessions_app import db_guards
from sessions_app.models import SupportSession, TranscriptEntry
from sessions_app.services import sessions
from sessions_app.services.transcript import GENESIS, chain_keys, entry_hash, transcript_append, transcript_verify
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


# --- the chain is keyed (issue 11, item 14) ---------------------------------------------------------

ROTATED = "k2:" + "n" * 40
OLD = "k1:" + "o" * 40


def _rebuild_without_the_key(session) -> None:
    """What someone who owns the database but not the key would do after editing an entry: drop
    the guard and recompute every hash of the chain (and the session's head) with plain SHA-256."""
    db_guards.remove(connection)
    prev, table = GENESIS, TranscriptEntry._meta.db_table
    for entry in TranscriptEntry.all_tenants.filter(session=session).order_by("index"):
        if entry.index == 1:
            entry.data = {"text": "nothing happened"}
        entry.prev_hash, entry.key_id = prev, ""
        prev = entry_hash(prev, entry)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET data = %s, prev_hash = %s, hash = %s, key_id = '' WHERE id = %s",
                [json.dumps(entry.data), entry.prev_hash, prev, entry._meta.pk.get_db_prep_value(entry.pk, connection)],
            )
    SupportSession.all_tenants.filter(pk=session.pk).update(transcript_head=prev)


def test_every_entry_names_the_chain_key_that_signed_it(session):
    keys = chain_keys()
    entries = list(TranscriptEntry.all_tenants.filter(session=session).order_by("index"))
    assert {e.key_id for e in entries} == {keys.signing_id} and keys.signing_id.startswith("sk-")
    assert all(e.hash != entry_hash(e.prev_hash, e) for e in entries)  # not the unkeyed SHA-256
    assert transcript_verify(session_id=session.pk)[0]


def test_a_chain_rebuilt_without_the_key_is_refused(session):
    """Was: the chain was plain SHA-256, so whoever could write the database could rebuild it."""
    _rebuild_without_the_key(session)
    with pytest.raises(CommandError, match=r"entry #0 .* is bad: not signed with a chain key"):
        call_command("verify_transcripts")


def test_a_chain_rebuilt_with_another_key_is_refused(session, settings):
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": ["sk-" + "0" * 12 + ":" + "x" * 40]}
    ok, entry, why = transcript_verify(session_id=session.pk)
    assert not ok and entry.index == 0 and "which this server does not hold" in why


def test_unkeyed_records_from_before_keys_verify_only_when_allowed(session, settings):
    _rebuild_without_the_key(session)
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_ACCEPT_UNKEYED": True}
    assert transcript_verify(session_id=session.pk) == (True, None, "")


def test_rotation_signs_with_the_new_key_and_still_verifies_the_old(session, settings):
    tech = session.opened_by
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": [OLD]}
    sessions.session_add_note(actor=tech, session=session, text="under k1")
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": [ROTATED, OLD]}
    sessions.session_add_note(actor=tech, session=session, text="under k2")
    key_ids = list(
        TranscriptEntry.all_tenants.filter(session=session).order_by("index").values_list("key_id", flat=True)
    )
    assert key_ids[-2:] == ["k1", "k2"]
    # The key derived from SECRET_KEY signed the first entries: keep it verifying too.
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": [ROTATED, OLD, ":".join(("sk-old", "s" * 40))]}
    ok, entry, why = transcript_verify(session_id=session.pk)
    assert not ok and entry.index == 0 and key_ids[0] in why  # the derived key is not in the list
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": []}
    ok, entry, why = transcript_verify(session_id=session.pk)
    assert not ok and entry.key_id == "k1"  # without k1 its entries no longer verify, and it says which


@pytest.mark.parametrize("value", ["nocolon" + "x" * 40, "k1:short", ":" + "x" * 40])
def test_malformed_chain_keys_are_refused_with_a_clear_error(settings, value):
    settings.CAISEY = {**settings.CAISEY, "TRANSCRIPT_KEYS": [value]}
    with pytest.raises(ImproperlyConfigured, match="CAISEY_TRANSCRIPT_KEYS: each entry is id:secret"):
        chain_keys()


def test_a_rotated_secret_key_keeps_verifying_through_its_fallback(session, settings):
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "r" * 50, [old]
    sessions.session_add_note(actor=session.opened_by, session=session, text="after the rotation")
    ids = set(TranscriptEntry.all_tenants.filter(session=session).values_list("key_id", flat=True))
    assert len(ids) == 2 and transcript_verify(session_id=session.pk)[0]
    settings.SECRET_KEY_FALLBACKS = []
    ok, entry, why = transcript_verify(session_id=session.pk)
    assert not ok and entry.index == 0 and "does not hold" in why
