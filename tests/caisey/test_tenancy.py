"""Tenant scoping (caisey.tenancy): tenant-owned tables fail closed when no tenant is bound."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from caisey import tenancy
from caisey.tenancy import TenantScopeMissing
from endpoints.models import ClientGroup, Endpoint, EnrollmentToken, Membership, Tenant
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def two():
    a, b = factories.tenant("Acme"), factories.tenant("Rival")
    ea = factories.endpoint(factories.client_group(a, name="Contoso"), hostname="acme-pc").endpoint
    eb = factories.endpoint(factories.client_group(b, name="Initech"), hostname="rival-pc").endpoint
    return a, b, ea, eb


@pytest.mark.parametrize("model", [Tenant, Membership, ClientGroup, EnrollmentToken, Endpoint])
def test_unbound_queries_raise(two, model):
    assert tenancy.current_tenant_id() is None
    with pytest.raises(TenantScopeMissing, match=model.__name__):
        model.objects.all()
    with pytest.raises(TenantScopeMissing):
        model.objects.filter(pk=uuid.uuid4()).exists()
    with pytest.raises(TenantScopeMissing):
        model.objects.count()


def test_bind_filters_to_the_bound_tenant(two):
    a, b, ea, eb = two
    with tenancy.bind(a.pk):
        assert tenancy.current_tenant_id() == a.pk
        assert list(Endpoint.objects.values_list("hostname", flat=True)) == ["acme-pc"]
        assert list(ClientGroup.objects.values_list("name", flat=True)) == ["Contoso"]
        assert list(Tenant.objects.all()) == [a]
        assert all(m.tenant_id == a.pk for m in Membership.objects.all()) and Membership.objects.exists()
        # Another tenant's row is simply not there, even by primary key.
        assert not Endpoint.objects.filter(pk=eb.pk).exists()
        with pytest.raises(Endpoint.DoesNotExist):
            Endpoint.objects.get(pk=eb.pk)
        # Writes through the scoped manager cannot reach it either.
        assert Endpoint.objects.filter(pk=eb.pk).update(hostname="pwned") == 0
    assert Endpoint.all_tenants.get(pk=eb.pk).hostname == "rival-pc"


def test_bind_accepts_a_string_id_and_refuses_an_empty_one(two):
    a, *_ = two
    with tenancy.bind(str(a.pk)):
        assert tenancy.current_tenant_id() == a.pk
        assert Endpoint.objects.count() == 1
    for empty in (None, ""):
        with pytest.raises(TenantScopeMissing):
            with tenancy.bind(empty):
                pass


def test_binding_is_restored_after_nesting_and_errors(two):
    a, b, *_ = two
    with tenancy.bind(a.pk):
        with pytest.raises(tenancy.TenantMismatch):  # acting for another tenant is never implicit
            with tenancy.bind(b.pk):
                pass
        with tenancy.bind(a.pk):  # the same tenant again nests
            assert tenancy.current_tenant_id() == a.pk
        with tenancy.system(), tenancy.bind(b.pk):  # crossing is named: system, then narrowed
            assert list(Endpoint.objects.values_list("hostname", flat=True)) == ["rival-pc"]
        assert tenancy.current_tenant_id() == a.pk
        with pytest.raises(RuntimeError):
            with tenancy.system():
                raise RuntimeError("boom")
        assert tenancy.current_tenant_id() == a.pk
    assert tenancy.current_tenant_id() is None
    with pytest.raises(TenantScopeMissing):
        Endpoint.objects.count()


def test_system_sees_every_tenant(two):
    a, b, ea, eb = two
    with tenancy.system():
        assert tenancy.current_tenant_id() is None  # system is not a tenant
        assert set(Endpoint.objects.values_list("hostname", flat=True)) == {"acme-pc", "rival-pc"}
        assert set(Tenant.objects.all()) == {a, b}


def test_all_tenants_is_unscoped_without_binding(two):
    assert Endpoint.all_tenants.count() == 2


def test_related_object_access_still_works(two):
    a, b, ea, eb = two
    endpoint = Endpoint.all_tenants.get(pk=ea.pk)
    # Forward foreign keys use the base manager: no tenant needed to follow them.
    assert endpoint.client_group.name == "Contoso"
    assert endpoint.tenant == a
    with tenancy.bind(a.pk):
        endpoint = Endpoint.objects.select_related("client_group", "tenant").get(pk=ea.pk)
        assert endpoint.client_group.name == "Contoso" and endpoint.tenant.name == "Acme"
        # Reverse relations go through the scoped manager: the own tenant's rows ...
        assert [e.hostname for e in a.endpoints.all()] == ["acme-pc"]
        assert [e.hostname for e in endpoint.client_group.endpoints.all()] == ["acme-pc"]
        # ... and none of another tenant's, even when starting from its objects.
        assert list(b.endpoints.all()) == []
        assert list(ClientGroup.all_tenants.get(tenant=b).endpoints.all()) == []
    # Unbound, a reverse relation fails closed like any other scoped query.
    with pytest.raises(TenantScopeMissing):
        list(a.endpoints.all())


def test_a_bound_queryset_built_earlier_keeps_its_tenant(two):
    a, *_ = two
    with tenancy.bind(a.pk):
        qs = Endpoint.objects.all()
    assert [e.hostname for e in qs] == ["acme-pc"]  # the filter was applied when it was built


def test_binding_does_not_leak_across_threads_or_tasks(two):
    a, b, *_ = two
    seen = {}

    def other_thread():
        seen["thread"] = tenancy.current_tenant_id()

    async def task(tenant_id, key):
        with tenancy.bind(tenant_id):
            await asyncio.sleep(0.01)
            seen[key] = tenancy.current_tenant_id()

    async def both():
        await asyncio.gather(task(a.pk, "task-a"), task(b.pk, "task-b"))
        seen["after"] = tenancy.current_tenant_id()

    with tenancy.bind(a.pk):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    asyncio.run(both())
    assert seen == {"thread": None, "task-a": a.pk, "task-b": b.pk, "after": None}


def test_middleware_binds_the_members_tenant(client, two):
    a, b, ea, eb = two
    client.force_login(factories.member(a).user)
    html = client.get("/").content.decode()
    assert "acme-pc" in html and "rival-pc" not in html
    assert tenancy.current_tenant_id() is None  # the binding ended with the request


def test_actor_labels_are_typed():
    from caisey.actors import Party, actor_label

    assert actor_label(Party.AGENT) == "agent"
    with pytest.raises(TypeError, match="Party"):
        actor_label("bridge")  # a free string is not an actor
    with pytest.raises(TypeError):
        actor_label(None)
