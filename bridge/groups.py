"""Channel-layer group names. The layer is a doorbell (at-most-once), never the record."""


def agent_group(endpoint_id) -> str:
    return f"agent.{endpoint_id}"


def console_tenant_group(tenant_id) -> str:
    return f"console.tenant.{tenant_id}"


def console_endpoint_group(endpoint_id) -> str:
    return f"console.endpoint.{endpoint_id}"
