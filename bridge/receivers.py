"""Bridge reactions to signals of the layer below."""

from __future__ import annotations

from django.dispatch import receiver

from bridge import notify
from bridge.groups import agent_group
from endpoints.signals import endpoint_revoked


@receiver(endpoint_revoked)
def close_revoked_agent(sender, endpoint_id, **kwargs) -> None:
    notify._send(agent_group(endpoint_id), {"type": "agent.revoked"})
