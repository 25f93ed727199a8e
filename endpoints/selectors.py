"""Reads of tenants and endpoints. Tenant-scoped unless the name says otherwise."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from caisey import tenancy
from endpoints.models import ApprovalPolicy, ClientGroup, Endpoint, Tenant
from endpoints.tickets import ticket_url


def endpoint_list(*, query: str = "", client_group: str = "") -> QuerySet[Endpoint]:
    qs = Endpoint.objects.select_related("client_group")
    if client_group:
        qs = qs.filter(Q(client_group__slug=client_group) | Q(client_group__name__iexact=client_group))
    for term in query.split():
        qs = qs.filter(Q(hostname__icontains=term) | Q(tags__icontains=term) | Q(client_group__name__icontains=term))
    return qs.order_by("client_group__name", "hostname")


def endpoint_get(*, endpoint_id) -> Endpoint:
    return Endpoint.objects.select_related("client_group", "tenant").get(pk=endpoint_id)


def client_group_list() -> QuerySet[ClientGroup]:
    return ClientGroup.objects.all()


# What an endpoint without any policy gets, and what client_group_create writes for a new group:
# shell and built-in commands need the end user's approval (issue 11 item 10; it was "none").
DEFAULT_POLICY = {
    "requires": "commands",
    "response_deadline_s": 300,
    "allow_escalation": False,
    "allow_without_user": False,
    "escalate_after_percent": 50,
}


def approval_policy_for(*, endpoint: Endpoint):
    """The endpoint's own policy, else its client group's, else DEFAULT_POLICY (an unsaved default).
    Read in the endpoint's tenant (a caller bound to another tenant gets TenantMismatch)."""
    with tenancy.bind(endpoint.tenant_id):
        policy = (
            ApprovalPolicy.objects.filter(endpoint_id=endpoint.pk).first()
            or ApprovalPolicy.objects.filter(client_group_id=endpoint.client_group_id).first()
        )
    return policy or ApprovalPolicy(tenant_id=endpoint.tenant_id, **DEFAULT_POLICY)


def approval_policies_for(*, endpoints: list[Endpoint]) -> dict:
    """``approval_policy_for`` of many endpoints of the bound tenant in one query: {endpoint pk: policy}."""
    policies = list(
        ApprovalPolicy.objects.filter(
            Q(endpoint_id__in=[e.pk for e in endpoints]) | Q(client_group_id__in={e.client_group_id for e in endpoints})
        )
    )
    by_endpoint = {p.endpoint_id: p for p in policies if p.endpoint_id}
    by_group = {p.client_group_id: p for p in policies if p.client_group_id}
    return {
        e.pk: by_endpoint.get(e.pk)
        or by_group.get(e.client_group_id)
        or ApprovalPolicy(tenant_id=e.tenant_id, **DEFAULT_POLICY)
        for e in endpoints
    }


# --- ticket links (endpoints/tickets.py) -----------------------------------------------------


def tenant_ticket_template(*, tenant_id: Any) -> str:
    """The bound tenant's ticket link template ("" when none, or without a tenant)."""
    if tenant_id is None:
        return ""
    return Tenant.objects.filter(pk=tenant_id).values_list("ticket_url_template", flat=True).first() or ""


def ticket_link(template: str, ticket: str) -> dict[str, str]:
    """A ticket reference as pages, exports and the API show it: ``{"ticket", "url"}``."""
    return {"ticket": ticket, "url": ticket_url(template, ticket)}
