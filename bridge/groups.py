"""Channel-layer group names. The layer is a doorbell (at-most-once), never the record."""


def agent_group(endpoint_id) -> str:
    return f"agent.{endpoint_id}"


def console_tenant_group(tenant_id) -> str:
    return f"console.tenant.{tenant_id}"


def console_endpoint_group(endpoint_id) -> str:
    return console_topic_group("endpoint", endpoint_id)


def console_topic_group(topic: str, object_id) -> str:
    """A console page's subscription to one object (an endpoint, a session, ...)."""
    return f"console.{topic}.{object_id}"


def console_user_group(user_id) -> str:
    """Every console socket of one person (rung when their sign-in changes)."""
    return f"console.user.{user_id}"
