"""Appending to a session's transcript: the durable, tamper-evident record of every step."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from caisey import tenancy
from caisey.audit_hooks import AuditEvent, audit_emit
from caisey.bulk_insert import insert_rows
from sessions_app.hooks import transcript_written_hooks
from sessions_app.kinds import TranscriptKind
from sessions_app.models import Action, SupportSession, TranscriptEntry

GENESIS = "0" * 64


def canonical(entry: TranscriptEntry) -> str:
    return json.dumps(
        {
            "session": str(entry.session_id),
            "index": entry.index,
            "kind": entry.kind,
            "actor": entry.actor,
            "at": entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "action": str(entry.action_id) if entry.action_id else None,
            "data": entry.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


@dataclass(frozen=True)
class ChainKeys:
    signing_id: str
    keys: dict[str, bytes]


def _derived(secret_key: str) -> tuple[str, bytes]:
    key = hmac.new(secret_key.encode(), b"caisey transcript chain v1", hashlib.sha256).digest()
    return "sk-" + hashlib.sha256(key).hexdigest()[:12], key


def chain_keys() -> ChainKeys:
    """The chain's keys, from settings (never the database): CAISEY_TRANSCRIPT_KEYS, else derived
    from SECRET_KEY and its fallbacks. The first key signs; every key verifies by its id."""
    pairs: list[tuple[str, bytes]] = []
    for item in settings.CAISEY["TRANSCRIPT_KEYS"]:
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id.strip() or len(key_id.strip()) > 40 or len(secret.strip()) < 32:
            raise ImproperlyConfigured(
                "CAISEY_TRANSCRIPT_KEYS: each entry is id:secret (an id of at most 40 characters, a secret of "
                f"at least 32); got {key_id.strip()[:40]!r}"
            )
        pairs.append((key_id.strip(), secret.strip().encode()))
    if not pairs:
        pairs = [_derived(k) for k in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]]
    return ChainKeys(signing_id=pairs[0][0], keys=dict(pairs))


def entry_hash(prev_hash: str, entry: TranscriptEntry, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 under ``key`` of the previous hash and the entry; without a key, the plain
    SHA-256 that entries written before the chain had keys carry."""
    message = (prev_hash + canonical(entry)).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _sign(entry: TranscriptEntry, keys: ChainKeys) -> str:
    entry.key_id = keys.signing_id
    entry.hash = entry_hash(entry.prev_hash, entry, key=keys.keys[keys.signing_id])
    return entry.hash


def transcript_append(
    *,
    session: SupportSession,
    kind: TranscriptKind,
    actor: str,
    data: dict[str, Any] | None = None,
    action: Action | None = None,
    at: datetime | None = None,
) -> TranscriptEntry:
    """Append one entry; must run inside the transaction of the change it records. Binds the
    session's tenant (refuses inside another tenant's scope). ``actor`` is the recorded label
    (``caisey.actors.actor_label``, or the prompt party that reported a move)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transcript_append must run inside the transaction of the change it records")
    # The entry is the session's tenant's: bound here (a no-op inside that tenant's scope, a narrowing
    # inside system(); inside another tenant's scope it raises).
    with tenancy.bind(session.tenant_id):
        # Serialise appends per session (a no-op lock on SQLite, whose writers are serialised anyway),
        # reading the chain's end from the locked row: the session keeps its length and head (kept
        # with every entry written, checked by verify_transcripts), so the last entry is not read.
        length, head = (
            SupportSession.objects.select_for_update()
            .filter(pk=session.pk)
            .values_list("transcript_length", "transcript_head")
            .get()
        )
        entry = TranscriptEntry(
            tenant_id=session.tenant_id,
            session_id=session.pk,
            index=length,
            kind=str(kind),
            actor=str(actor),
            at=at or timezone.now(),
            action=action,
            data=json.loads(json.dumps(data or {}, default=str)),
            prev_hash=head if length else GENESIS,
        )
        _sign(entry, chain_keys())
        entry.save(force_insert=True)
        SupportSession.objects.filter(pk=session.pk).update(
            transcript_length=entry.index + 1, transcript_head=entry.hash
        )
        audit_emit([_audit_event(entry, endpoint_id=session.endpoint_id)])
        for hook in transcript_written_hooks():
            hook([entry])
    return entry


def _audit_event(entry: TranscriptEntry, *, endpoint_id: Any) -> AuditEvent:
    """The entry as the audit stream tells it (caisey/audit_hooks.py); its id is the entry's."""
    return AuditEvent(
        tenant_id=entry.tenant_id,
        category="transcript",
        kind=entry.kind,
        at=entry.at,
        actor=entry.actor,
        event_id=entry.id,
        session_id=entry.session_id,
        endpoint_id=endpoint_id,
        data={"index": entry.index, "action": str(entry.action_id) if entry.action_id else None, **entry.data},
    )


def transcript_begin(*, session: SupportSession, entries: list[dict[str, Any]]) -> list[TranscriptEntry]:
    """The first entries of a session not written yet (a bulk run opens hundreds at once), chained in
    memory: its chain starts at GENESIS, so no earlier entry exists to read or lock. Sets the
    session's ``transcript_length`` and ``transcript_head`` (saved with it); the caller writes the
    session, then the entries with ``transcript_insert_many``, in the transaction of the change.
    Each of ``entries`` holds ``transcript_append``'s keyword arguments but ``session``."""
    if not session._state.adding:
        raise RuntimeError("transcript_begin is for a session not saved yet; append with transcript_append")
    prev, built, keys = GENESIS, [], chain_keys()
    for index, item in enumerate(entries):
        entry = TranscriptEntry(
            tenant_id=session.tenant_id,
            session=session,  # cached on the entry: transcript_insert_many reads its endpoint without a query
            index=index,
            kind=str(item["kind"]),
            actor=str(item["actor"]),
            at=item.get("at") or timezone.now(),
            action=item.get("action"),
            data=json.loads(json.dumps(item.get("data") or {}, default=str)),
            prev_hash=prev,
        )
        prev = _sign(entry, keys)
        built.append(entry)
    session.transcript_length, session.transcript_head = len(built), (prev if built else "")
    return built


def transcript_insert_many(entries: list[TranscriptEntry]) -> None:
    """Write entries built by ``transcript_begin`` (after their sessions) in one statement batch;
    each must be its bound tenant's, as ``transcript_append`` binds it."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transcript entries must be written inside the transaction of the change they record")
    for entry in entries:
        tenancy.check_write(TranscriptEntry, entry.tenant_id)
    insert_rows(TranscriptEntry, entries)  # keys set, tenants checked above: one executemany
    cached = TranscriptEntry.session.is_cached
    unknown = {e.session_id for e in entries if not cached(e)}
    endpoints = dict(SupportSession.objects.filter(pk__in=unknown).values_list("pk", "endpoint_id")) if unknown else {}
    audit_emit(
        [
            _audit_event(e, endpoint_id=e.session.endpoint_id if cached(e) else endpoints.get(e.session_id))
            for e in entries
        ]
    )
    for hook in transcript_written_hooks():
        hook(entries)


def transcript_verify(*, session_id: Any) -> tuple[bool, TranscriptEntry | None, str]:
    """Walk the chain; returns (ok, first bad entry, why). Reads only, by session id, from any
    scope (the operator's command, exports, tests): hence the unscoped manager."""
    prev = GENESIS
    expected_index = 0
    last = None
    keys = chain_keys()
    accept_unkeyed = settings.CAISEY["TRANSCRIPT_ACCEPT_UNKEYED"]
    # all_tenants: a read-only integrity check by id, called from any scope.
    for entry in TranscriptEntry.all_tenants.filter(session_id=session_id).order_by("index"):
        if entry.index != expected_index:
            return False, entry, f"index {entry.index} where {expected_index} was expected (an entry is missing)"
        if entry.prev_hash != prev:
            return False, entry, "previous-hash link broken (an earlier entry was removed or altered)"
        if not entry.key_id:
            if not accept_unkeyed:
                return (
                    False,
                    entry,
                    (
                        "not signed with a chain key (anyone who can write the database could have rebuilt it); "
                        "a record from before keys verifies with CAISEY_TRANSCRIPT_ACCEPT_UNKEYED=true"
                    ),
                )
            key = None
        elif entry.key_id in keys.keys:
            key = keys.keys[entry.key_id]
        else:
            return (
                False,
                entry,
                (
                    f"signed with chain key {entry.key_id!r}, which this server does not hold "
                    "(add it to CAISEY_TRANSCRIPT_KEYS after the signing key)"
                ),
            )
        if not hmac.compare_digest(entry_hash(prev, entry, key=key), entry.hash):
            return False, entry, "content does not match its hash (the entry was altered)"
        prev = entry.hash
        expected_index += 1
        last = entry
    # all_tenants: as above.
    session = SupportSession.all_tenants.only("transcript_length", "transcript_head").get(pk=session_id)
    if (expected_index, prev if expected_index else "") != (session.transcript_length, session.transcript_head):
        return (
            False,
            last if expected_index else None,
            (
                f"the record ends at entry #{expected_index - 1} but held {session.transcript_length} entries "
                "(entries at its end were removed)"
            ),
        )
    return True, None, ""
