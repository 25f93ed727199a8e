"""What sessions_app does with the agent frames and outbox rows it owns (bridge/registry.py)."""

from __future__ import annotations

from bridge.registry import console_topic, handles, on_delivered, on_failed, on_prompt_report, owner_lock
from endpoints.hooks import on_endpoint_reenrolled
from sessions_app.models import Action, Prompt, SupportSession
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts
from sessions_app.services import endpoint_events, locks


@handles("action.output")
def on_action_output(endpoint, envelope) -> None:
    services.action_output_receive(endpoint=endpoint, body=envelope.body)


@handles("action.result")
def on_action_result(endpoint, envelope) -> None:
    services.action_result_receive(endpoint=endpoint, body=envelope.body)


@handles("prompt.update")
def on_prompt_update(endpoint, envelope) -> None:
    prompts.prompt_runtime_update(endpoint=endpoint, body=envelope.body)


@on_prompt_report
def on_report(endpoint, reports) -> None:
    prompts.prompt_runtime_report(endpoint=endpoint, reports=reports)


@owner_lock("action")
def lock_action_session(message) -> None:
    locks.session_lock_holding(Action, message.ref_id)


@owner_lock("prompt")
def lock_prompt_session(message) -> None:
    locks.session_lock_holding(Prompt, message.ref_id)


@on_delivered("action")
def on_action_delivered(message) -> None:
    services.action_delivered(message=message)


@on_failed("action")
def on_action_failed(message) -> None:
    services.action_undeliverable(message=message)


@on_delivered("prompt")
def on_prompt_delivered(message) -> None:
    prompts.prompt_delivered(message=message)


@on_failed("prompt")
def on_prompt_failed(message) -> None:
    prompts.prompt_undeliverable(message=message)


@console_topic("session")
def session_in_tenant(tenant_id, session_id: str) -> bool:
    return SupportSession.objects.filter(pk=session_id).exists()


@on_endpoint_reenrolled
def on_reenrolled(endpoint_id) -> None:
    endpoint_events.sessions_record_reenrollment(endpoint_id=endpoint_id)
