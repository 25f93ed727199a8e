"""endpoints.access and endpoints.middleware: the one resolution of a user's tenant, the
explicit superuser fallback, and services binding the tenant of the person they act for."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from caisey import tenancy
from caisey.actors import Party
from caisey.errors import Forbidden
from endpoints.access import acting_for, membership_resolve, require_member, require_operator
from endpoints.middleware import TenantMiddleware
from endpoints.models import Role
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant():
    return factories.tenant()


def superuser(username: str = "root"):
    return get_user_model().objects.create_superuser(username=username, password=factories.PASSWORD)


def test_a_member_resolves_to_their_membership_and_tenant(tenant):
    user = factories.technician(tenant)
    access = membership_resolve(user=user)
    assert access is not None and access.membership.user == user
    assert access.tenant_id == tenant.pk and not access.superuser


def test_nobody_without_a_membership_resolves(tenant):
    lone = get_user_model().objects.create_user(username="lone", password=factories.PASSWORD)
    assert membership_resolve(user=lone) is None
    assert membership_resolve(user=AnonymousUser()) is None
    assert membership_resolve(user=None) is None


def test_an_inactive_member_resolves_to_nothing(tenant):
    user = factories.technician(tenant)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert membership_resolve(user=user) is None


def test_the_superuser_fallback_is_explicit(tenant):
    root = superuser()
    access = membership_resolve(user=root)
    assert access is not None and access.superuser and access.membership is None and access.tenant_id is None
    # A superuser with a membership is that tenant's member like anyone else.
    member_root = superuser("member-root")
    with tenancy.bind(tenant.pk):
        from endpoints.models import Membership

        Membership.objects.create(user=member_root, tenant=tenant, role=Role.ADMIN)
    access = membership_resolve(user=member_root)
    assert access.membership is not None and access.tenant_id == tenant.pk and access.superuser


def run_middleware(user):
    seen = {}

    def view(request):
        seen.update(
            tenant=tenancy.current_tenant_id(),
            system=tenancy.is_system(),
            membership=request.membership,
            request_tenant=request.tenant,
        )
        return "response"

    request = RequestFactory().get("/")
    request.user = user
    assert TenantMiddleware(view)(request) == "response"
    assert tenancy.current_tenant_id() is None and not tenancy.is_system()  # unbound after the request
    return seen


def test_the_middleware_binds_a_members_tenant(tenant):
    user = factories.technician(tenant)
    seen = run_middleware(user)
    assert seen["tenant"] == tenant.pk and not seen["system"]
    assert seen["membership"].user == user and seen["request_tenant"] == tenant


def test_the_middleware_runs_a_superuser_without_membership_as_system(tenant):
    seen = run_middleware(superuser())
    assert seen["system"] and seen["tenant"] is None and seen["membership"] is None


@pytest.mark.parametrize("who", ["anonymous", "no membership", "inactive"])
def test_the_middleware_binds_nothing_for_anybody_else(tenant, who):
    if who == "anonymous":
        user = AnonymousUser()
    elif who == "no membership":
        user = get_user_model().objects.create_user(username="lone", password=factories.PASSWORD)
    else:
        user = factories.technician(tenant)
        user.is_active = False
    seen = run_middleware(user)
    assert seen["tenant"] is None and not seen["system"] and seen["membership"] is None


def test_require_operator_and_member(tenant):
    other = factories.tenant()
    tech = factories.technician(tenant)
    viewer = factories.member(tenant, role=Role.VIEWER).user
    assert require_operator(tech, tenant.pk).tenant_id == tenant.pk
    assert require_member(viewer, tenant.pk).role == Role.VIEWER
    with pytest.raises(Forbidden):
        require_operator(viewer, tenant.pk)
    with pytest.raises(Forbidden):
        require_operator(tech, other.pk)
    with pytest.raises(Forbidden):
        require_member(Party.SYSTEM, tenant.pk)


def test_acting_for_checks_the_person_and_binds_their_tenant(tenant):
    other = factories.tenant()
    tech = factories.technician(tenant)
    with acting_for(tech, tenant.pk) as membership:
        assert tenancy.current_tenant_id() == tenant.pk and membership.user == tech
    with pytest.raises(Forbidden):
        with acting_for(tech, other.pk):
            pass
    with acting_for(Party.SYSTEM, other.pk) as membership:  # a system party names the row's tenant
        assert membership is None and tenancy.current_tenant_id() == other.pk
    assert tenancy.current_tenant_id() is None


def test_an_untyped_actor_is_a_programming_error(tenant):
    for actor in ("test", None):
        with pytest.raises(TypeError, match="caisey.actors.Party"):
            require_operator(actor, tenant.pk)
