"""A technician's time zone: their own choice, else their tenant's, else the server's; set on the
settings page, activated per request by endpoints.middleware.TimeZoneMiddleware."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from caisey.errors import Forbidden, Rejected
from endpoints.middleware import TimeZoneMiddleware
from endpoints.models import Membership, Role, Tenant
from endpoints.people import membership_time_zone_set, tenant_time_zone_set, time_zone_of
from tests import factories

pytestmark = pytest.mark.django_db


def zone_during_request(membership) -> str:
    seen = {}

    def view(request):
        seen["zone"] = timezone.get_current_timezone_name()
        return HttpResponse()

    request = RequestFactory().get("/")
    request.membership = membership
    TimeZoneMiddleware(view)(request)
    return seen["zone"]


def test_the_middleware_activates_the_members_zone_for_the_request_only(settings):
    settings.TIME_ZONE = "UTC"
    membership = factories.member(factories.tenant())
    assert zone_during_request(membership) == "UTC"  # nothing chosen: the server's
    Tenant.all_tenants.filter(pk=membership.tenant_id).update(time_zone="Europe/Paris")
    membership = Membership.all_tenants.select_related("tenant").get(pk=membership.pk)
    assert zone_during_request(membership) == "Europe/Paris"  # the tenant's
    membership.time_zone = "America/Chicago"
    assert zone_during_request(membership) == "America/Chicago"  # the person's own wins
    assert timezone.get_current_timezone_name() == "UTC"  # deactivated after the request
    assert zone_during_request(None) == "UTC"  # anonymous: the server's


def test_a_zone_the_server_no_longer_knows_falls_back_to_the_default(settings):
    settings.TIME_ZONE = "UTC"
    membership = factories.member(factories.tenant())
    membership.time_zone = "Mars/Olympus_Mons"
    assert zone_during_request(membership) == "UTC"


def test_a_member_sets_their_zone_and_bad_input_changes_nothing():
    membership = factories.member(factories.tenant(), role=Role.VIEWER)
    user = membership.user
    membership_time_zone_set(actor=user, tenant_id=membership.tenant_id, time_zone=" Asia/Kolkata ")
    assert Membership.all_tenants.get(pk=membership.pk).time_zone == "Asia/Kolkata"
    with pytest.raises(Rejected, match="unknown time zone"):
        membership_time_zone_set(actor=user, tenant_id=membership.tenant_id, time_zone="Europe/Atlantis")
    assert Membership.all_tenants.get(pk=membership.pk).time_zone == "Asia/Kolkata"
    with pytest.raises(Forbidden):
        membership_time_zone_set(actor=user, tenant_id=factories.tenant().pk, time_zone="UTC")
    membership_time_zone_set(actor=user, tenant_id=membership.tenant_id, time_zone="")
    assert time_zone_of(Membership.all_tenants.get(pk=membership.pk)) == "UTC"


def test_only_a_tenant_admin_sets_the_tenants_zone():
    tenant = factories.tenant()
    tech = factories.member(tenant, role=Role.TECHNICIAN).user
    with pytest.raises(Forbidden):
        tenant_time_zone_set(actor=tech, tenant_id=tenant.pk, time_zone="Europe/Berlin")
    admin = factories.member(tenant, role=Role.ADMIN).user
    tenant_time_zone_set(actor=admin, tenant_id=tenant.pk, time_zone="Europe/Berlin")
    assert Tenant.all_tenants.get(pk=tenant.pk).time_zone == "Europe/Berlin"


def test_the_settings_page_sets_the_zone_and_pages_show_times_in_it(client):
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant), hostname="pc1").endpoint
    tech = factories.technician(tenant)
    client.force_login(tech)
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert '<select id="time_zone" name="time_zone">' in page and 'name="tenant_time_zone"' not in page
    response = client.post(
        reverse("console:tenant_settings"), {"section": "time_zone", "time_zone": "Nowhere/Else"}, follow=True
    )
    assert "Time zone not saved: unknown time zone" in response.content.decode()
    client.post(reverse("console:tenant_settings"), {"section": "time_zone", "time_zone": "Asia/Tokyo"})
    assert Membership.all_tenants.get(user=tech).time_zone == "Asia/Tokyo"
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert "<option selected>Asia/Tokyo</option>" in page and 'data-time-zone="Asia/Tokyo"' in page
    session = factories.support_session(endpoint, opened_by=tech)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    opened = timezone.localtime(session.opened_at, timezone=timezone.get_fixed_timezone(9 * 60))
    assert f'title="{opened:%Y-%m-%d %H:%M:%S} JST (Asia/Tokyo)" data-relative>' in page
