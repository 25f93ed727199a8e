"""What sessions_app does with agent frames and bridge delivery signals it owns."""

from __future__ import annotations

from django.dispatch import receiver

from bridge.registry import console_topic, handles, on_prompt_report
from bridge.signals import outbox_delivered, outbox_failed
from sessions_app.models import SupportSession
from sessions_app.services import actions as services
from sessions_app.services import approvals as prompts


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


@receiver(outbox_delivered)
def on_delivered(sender, message, **kwargs) -> None:
    if message.ref_type == "action":
        services.action_delivered(message=message)
    elif message.ref_type == "prompt":
        prompts.prompt_delivered(message=message)


@receiver(outbox_failed)
def on_failed(sender, message, **kwargs) -> None:
    if message.ref_type == "action":
        services.action_undeliverable(message=message)
    elif message.ref_type == "prompt":
        prompts.prompt_undeliverable(message=message)


@console_topic("session")
def session_in_tenant(tenant_id, session_id: str) -> bool:
    return SupportSession.objects.filter(pk=session_id).exists()
