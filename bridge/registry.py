"""Handlers for agent message types, registered by the domain apps that own them.

The bridge is transport: it authenticates, deduplicates by envelope id and
acknowledges; what an ``action.result`` or ``prompt.update`` means is for the
app that registered the handler (sessions_app registers its own in ready()).
A handler is a plain synchronous function ``(endpoint, envelope) -> None``
called inside one database transaction with the endpoint's tenant bound.
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
