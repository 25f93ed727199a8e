"""The one way to plug into the bridge: decorators, registered by the apps that own the meaning.

The bridge is transport: it authenticates, deduplicates by envelope id and
acknowledges; what an ``action.result`` or ``prompt.update`` means is for the
app that registered the handler (sessions_app registers its own in ready(); the
bridge registers its own for ``mode`` rows in ``bridge/handlers.py``).

- ``@handles(message_type)``: an agent frame, ``(endpoint, envelope) -> None``.
- ``@on_delivered(ref_type)`` / ``@on_failed(ref_type)``: an outbox row whose ``ref_type``
  is that was acknowledged by its agent / given up on, ``(message) -> None``; ``@owner_lock(ref_type)``:
  what its owner locks first, before the row changes (the owner's lock order).
- ``@on_prompt_report``: the prompts a runtime reports holding, ``(endpoint, reports) -> None``.
- ``@console_topic(topic)``: what a console page may subscribe to.

Every handler is a plain synchronous function called inside the database transaction of
the change, with the endpoint's tenant bound. No Django signals: each plug is explicit,
typed, and registered once (a second, different handler for the same key raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caisey_agent.protocol import Envelope

Handler = Callable[[Any, Envelope], None]
_handlers: dict[str, Handler] = {}


def handles(message_type: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        if message_type in _handlers and _handlers[message_type] is not func:
            raise RuntimeError(f"a handler for {message_type!r} is already registered")
        _handlers[message_type] = func
        return func

    return register


def handler_for(message_type: str) -> Handler | None:
    return _handlers.get(message_type)


# Outbox rows that reached their end: ref_type -> handler(message). Called in the transaction
# that acknowledged (delivered) or gave up on (failed) the row, its endpoint's tenant bound.
OutboxHandler = Callable[[Any], None]
_delivered: dict[str, OutboxHandler] = {}
_failed: dict[str, OutboxHandler] = {}
_owner_locks: dict[str, OutboxHandler] = {}


def _register_outbox(table: dict[str, OutboxHandler], what: str, ref_type: str):
    def register(func: OutboxHandler) -> OutboxHandler:
        if ref_type in table and table[ref_type] is not func:
            raise RuntimeError(f"a {what} handler for ref_type {ref_type!r} is already registered")
        table[ref_type] = func
        return func

    return register


def on_delivered(ref_type: str) -> Callable[[OutboxHandler], OutboxHandler]:
    """Register what happens when an outbox row of ``ref_type`` is acknowledged by its agent."""
    return _register_outbox(_delivered, "delivered", ref_type)


def on_failed(ref_type: str) -> Callable[[OutboxHandler], OutboxHandler]:
    """Register what happens when an outbox row of ``ref_type`` is given up on (failed_to_deliver)."""
    return _register_outbox(_failed, "failed", ref_type)


def owner_lock(ref_type: str) -> Callable[[OutboxHandler], OutboxHandler]:
    """Register what to lock before an outbox row of ``ref_type`` is acknowledged or given up on:
    the owner's lock order puts its own rows first (sessions_app locks the session of a prompt
    or action before anything of it; taking the outbox row first deadlocked on PostgreSQL)."""
    return _register_outbox(_owner_locks, "owner lock", ref_type)


def owner_lock_for(ref_type: str) -> OutboxHandler | None:
    return _owner_locks.get(ref_type)


def delivered_handler(ref_type: str) -> OutboxHandler | None:
    return _delivered.get(ref_type)


def failed_handler(ref_type: str) -> OutboxHandler | None:
    return _failed.get(ref_type)


# Console subscription topics: topic -> check(tenant_id, object_id) -> bool. The endpoint
# topic is the bridge's own; domain apps add theirs (sessions_app adds "session").
TopicCheck = Callable[[Any, str], bool]
_topics: dict[str, TopicCheck] = {}


def console_topic(topic: str) -> Callable[[TopicCheck], TopicCheck]:
    def register(func: TopicCheck) -> TopicCheck:
        _topics[topic] = func
        return func

    return register


def topic_check(topic: str) -> TopicCheck | None:
    return _topics.get(topic)


# Listeners for the prompts a runtime reports holding (on hello and heartbeats), called
# as (endpoint, list[PromptReport]) in one transaction with the endpoint's tenant bound.
ReportListener = Callable[[Any, list], None]
_report_listeners: list[ReportListener] = []


def on_prompt_report(func: ReportListener) -> ReportListener:
    if func not in _report_listeners:
        _report_listeners.append(func)
    return func


def prompt_report_listeners() -> list[ReportListener]:
    return list(_report_listeners)
