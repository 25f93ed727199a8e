"""Tenant scoping: the one mechanism that keeps each MSP's data its own.

Reads: every tenant-owned model's default manager (``objects``) filters by the
tenant bound to the current context and raises when none is bound: a request,
socket message or task that forgot to say whose data it works on fails closed
instead of seeing everybody's.

Writes: saving (or bulk-creating) a tenant-owned row checks the row's tenant
against the bound one, whichever manager loaded it; no tenant bound, or another
tenant's row, raises. Binding a second, different tenant inside a bound one
raises too: a request of tenant A can never act for tenant B by accident.

Who binds: the entry points (the console middleware, the API's base view and the
console socket, all through ``endpoints.access``), the agent socket (the
endpoint's tenant), services acting for a technician (the technician's own tenant)
and tasks (the row's tenant). System code that must cross tenants (sweeps, the
agent handshake before the endpoint is known, public token links before the token
is resolved, a superuser in the admin) says so at the call site with ``system()``;
inside it, ``bind()`` narrows to one tenant again.

The unscoped ``all_tenants`` manager exists for that system code only; a test
(tests/caisey/test_unscoped_manager.py) keeps the places that use it on a short
list, each with its reason.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from django.db import models
from django.db.models import signals

_SYSTEM = object()
_bound: ContextVar[object | None] = ContextVar("caisey_tenant", default=None)


class TenantScopeMissing(RuntimeError):
    """A tenant-owned table was read or written with no tenant bound (a programming error)."""


class TenantMismatch(RuntimeError):
    """A tenant-owned row of another tenant was written, or another tenant bound, inside a
    tenant's scope (a programming error, never a user's)."""


@contextlib.contextmanager
def bind(tenant_id: uuid.UUID | str) -> Iterator[None]:
    """Act for one tenant. Inside ``system()`` this narrows the scope; inside the same
    tenant's binding it is a no-op; inside another tenant's binding it raises."""
    if not tenant_id:
        raise TenantScopeMissing("bind() needs a tenant id")
    wanted = uuid.UUID(str(tenant_id))
    current = _bound.get()
    if isinstance(current, uuid.UUID) and current != wanted:
        raise TenantMismatch(f"tenant {wanted} bound inside the scope of tenant {current}")
    token = _bound.set(wanted)
    try:
        yield
    finally:
        _bound.reset(token)


@contextlib.contextmanager
def unbound() -> Iterator[None]:
    """No tenant at all (tests of the fail-closed behaviour; code about to resolve one)."""
    token = _bound.set(None)
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


def is_system() -> bool:
    return _bound.get() is _SYSTEM


def check_write(model: type[models.Model], tenant_id: object) -> None:
    """Fail closed for writes: ``tenant_id`` (the row's tenant) must be the bound tenant."""
    value = _bound.get()
    if value is _SYSTEM:
        return
    if value is None:
        raise TenantScopeMissing(
            f"{model.__name__} written with no tenant bound; bind the tenant (tenancy.bind) "
            "or use tenancy.system() for cross-tenant system work"
        )
    if tenant_id == value:  # a UUID already (a bulk run checks thousands of rows): no parsing
        return
    if tenant_id is None or uuid.UUID(str(tenant_id)) != value:
        raise TenantMismatch(f"{model.__name__} of tenant {tenant_id} written in the scope of tenant {value}")


def row_tenant_id(instance: models.Model, tenant_field: str) -> object:
    """The tenant id of a row, following ``tenant_field`` ("tenant", "pk", "action__tenant")."""
    if tenant_field == "pk":
        return instance.pk
    *path, last = tenant_field.split("__")
    obj = instance
    for name in path:
        obj = getattr(obj, name)
    return getattr(obj, f"{last}_id")


class TenantScopedQuerySet(models.QuerySet):
    def _checked(self, objs) -> list:
        """``objs`` as a list, each row's tenant checked against the bound scope (``check_write``)."""
        objs = list(objs)
        field = getattr(self.model._default_manager, "tenant_field", "tenant")
        for obj in objs:
            check_write(self.model, row_tenant_id(obj, field))
        return objs

    def bulk_create(self, objs, *args, **kwargs):
        return super().bulk_create(self._checked(objs), *args, **kwargs)

    def insert_many(self, objs) -> None:
        """``bulk_create`` for rows whose keys are set, on the hot paths (a bulk run writes thousands):
        the same tenant check per row, then ``caisey.bulk_insert.insert_rows``."""
        from caisey.bulk_insert import insert_rows

        insert_rows(self.model, self._checked(objs), using=self.db)


_TenantScopedManagerBase = models.Manager.from_queryset(TenantScopedQuerySet)


class TenantScopedManager(_TenantScopedManagerBase):
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


def _guard_save(sender, instance, raw=False, **kwargs) -> None:
    manager = sender._default_manager
    if raw or not isinstance(manager, TenantScopedManager):
        return  # fixtures being loaded, or a model that is not tenant-owned
    check_write(sender, row_tenant_id(instance, manager.tenant_field))


# Every save of a tenant-owned row, whichever manager loaded it (kernel integrity, not domain logic).
signals.pre_save.connect(_guard_save, dispatch_uid="caisey.tenancy.guard_save")


def tenant_context(request) -> dict:
    return {"tenant": getattr(request, "tenant", None), "membership": getattr(request, "membership", None)}
