"""The bridge's own plugs: its ``mode`` outbox rows, and endpoints' revocation and re-enrollment hooks.

Registered through the same registries the domain apps use (bridge/registry.py,
endpoints/hooks.py), imported by ``BridgeConfig.ready``.
"""

from __future__ import annotations

from django.db import transaction

from bridge import notify, services
from bridge.registry import on_delivered
from endpoints import services as endpoint_services
from endpoints.hooks import on_endpoint_reenrolled, on_endpoint_revoked, on_sign_in_changed
from endpoints.models import Endpoint


@on_endpoint_revoked
def close_revoked_agent(endpoint_id) -> None:
    """Its live connection, wherever it is, closes (the agent is refused from now on anyway)."""
    notify.agent_revoked_now(endpoint_id=endpoint_id)


@on_endpoint_reenrolled
def close_replaced_agent(endpoint_id) -> None:
    """The socket of the identity a re-enrollment replaced closes once the new credential is committed;
    its agent is refused after (its credential no longer matches)."""
    transaction.on_commit(lambda: notify.agent_replaced_now(endpoint_id=endpoint_id))


@on_sign_in_changed
def recheck_console_sockets(user_id) -> None:
    """The person's console sockets re-check their sessions (bridge/consumers/console.py)."""
    notify.console_sign_in_changed_now(user_id=user_id)


@on_delivered("mode")
def mode_applied(message) -> None:
    """The agent now beats at the new cadence: presence must expect that cadence."""
    endpoint_services.endpoint_interval_record(
        endpoint_id=message.endpoint_id, interval=message.body["heartbeat_interval"]
    )
    # Waking ends here (or a rest begins): consoles hear it now, not at the next sweep.
    services.presence_announce(endpoint=Endpoint.objects.get(pk=message.endpoint_id))
