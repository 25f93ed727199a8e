"""Tenant scoping: the one mechanism that keeps each MSP's data its own.

Every tenant-owned model's default manager (``objects``) filters by the tenant
bound to the current context and raises when none is bound: a request, socket
message or task that forgot to say whose data it works on fails closed instead
of seeing everybody's. ``TenantMiddleware`` binds the signed-in user's tenant
for each request; consumers and services bind the tenant they act for;
system code that must cross tenants (sweeps, the agent handshake before the
endpoint is known, a superuser in the admin) says so with ``system()``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from django.db import models

_SYSTEM = object()
_bound: ContextVar[object | None] = ContextVar("caisey_tenant", default=None)


class TenantScopeMissing(RuntimeError):
    """A tenant-owned table was queried with no tenant bound."""


@contextlib.contextmanager
def bind(tenant_id: uuid.UUID | str) -> Iterator[None]:
    if not tenant_id:
        raise TenantScopeMissing("bind() needs a tenant id")
    token = _bound.set(uuid.UUID(str(tenant_id)))
    try:
        yield
    finally:
        _bound.reset(token)


@contextlib.contextmanager
def system() -> Iterator[None]:
    token = _bound.set(_SYSTEM)
    try:
        yield
    finally:
        _bound.reset(token)


def current_tenant_id() -> uuid.UUID | None:
    value = _bound.get()
    return value if isinstance(value, uuid.UUID) else None


class TenantScopedQuerySet(models.QuerySet):
    pass


class TenantScopedManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    """Default manager of tenant-owned models. ``tenant_field`` is the lookup to the tenant id."""

    def __init__(self, tenant_field: str = "tenant") -> None:
        super().__init__()
        self.tenant_field = tenant_field

    def get_queryset(self) -> models.QuerySet:
        value = _bound.get()
        qs = super().get_queryset()
        if value is _SYSTEM:
            return qs
        if value is None:
            raise TenantScopeMissing(
                f"{self.model.__name__}.objects used with no tenant bound; "
                "bind the tenant (tenancy.bind) or use tenancy.system() for cross-tenant system work"
            )
        return qs.filter(**{self.tenant_field: value})


class TenantMiddleware:
    """Binds the signed-in user's tenant for the whole request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from endpoints.selectors import membership_for_user

        request.membership = None
        request.tenant = None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        membership = membership_for_user(user=user)
        if membership is not None:
            request.membership = membership
            request.tenant = membership.tenant
            with bind(membership.tenant_id):
                return self.get_response(request)
        if user.is_superuser:
            with system():
                return self.get_response(request)
        return self.get_response(request)


def tenant_context(request) -> dict:
    return {"tenant": getattr(request, "tenant", None), "membership": getattr(request, "membership", None)}
