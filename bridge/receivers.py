"""Bridge reactions to signals: revoked endpoints, and the bridge's own delivered messages."""

from __future__ import annotations

from django.dispatch import receiver

from bridge import notify
from bridge.groups import agent_group
from bridge.signals import outbox_delivered
from endpoints.models import Endpoint
from endpoints.signals import endpoint_revoked


@receiver(endpoint_revoked)
def close_revoked_agent(sender, endpoint_id, **kwargs) -> None:
    notify._send(agent_group(endpoint_id), {"type": "agent.revoked"})


@receiver(outbox_delivered)
def mode_applied(sender, message, **kwargs) -> None:
    # The agent now beats at the new cadence: presence must expect that cadence.
    if message.kind == "mode.set":
        Endpoint.all_tenants.filter(pk=message.endpoint_id).update(
            heartbeat_interval=message.body["heartbeat_interval"]
        )
