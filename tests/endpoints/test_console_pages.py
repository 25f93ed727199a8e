"""Server-rendered console pages and the Django admin, seen by members of one tenant."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from caisey import tenancy
from endpoints import services
from endpoints.models import AgentMode, ClientGroup, Endpoint, Membership, Role
from tests import factories

pytestmark = pytest.mark.django_db


def row_of(html: str, endpoint: Endpoint) -> str:
    """The table row of one endpoint in the endpoint list."""
    match = re.search(rf'<tr data-endpoint="{endpoint.pk}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {endpoint.hostname}"
    return match.group(1)


def presence_in(html: str) -> str:
    """The presence shown in a page or table row (the element marked data-field="presence")."""
    match = re.search(r'data-field="presence"[^>]*>\s*(\w+)\s*<', html)
    assert match, "no presence shown"
    return match.group(1)


def listed_hostnames(html: str, *endpoints: Endpoint) -> set[str]:
    return {e.hostname for e in endpoints if f'data-endpoint="{e.pk}"' in html}


def connect(endpoint: Endpoint, machine: dict | None = None, mode: str = "lazy") -> Endpoint:
    """Record a live agent connection, as the bridge does on a valid hello."""
    with tenancy.bind(endpoint.tenant_id):  # as the agent socket does once the credential is verified
        if mode != "lazy":
            services.endpoint_mode_change(endpoint=endpoint, mode=AgentMode(mode))
            services.endpoint_interval_record(endpoint_id=endpoint.pk, interval=10.0)
            endpoint.refresh_from_db()
        return services.endpoint_record_connect(
            endpoint=endpoint, connection_id="c" * 32, agent_version="1.2.3", machine=machine or {}, interval=10.0
        )


@pytest.fixture
def world():
    """Tenant A with two client groups and three endpoints; tenant B with one."""
    a = factories.tenant("Acme MSP")
    contoso = factories.client_group(a, name="Contoso")
    fabrikam = factories.client_group(a, name="Fabrikam")
    dc01 = factories.endpoint(contoso, hostname="contoso-dc01", tags="dc critical").endpoint
    erp = factories.endpoint(contoso, hostname="contoso-app02", tags="erp").endpoint
    fab = factories.endpoint(fabrikam, hostname="fabrikam-pc07").endpoint
    b = factories.tenant("Rival MSP")
    rival_group = factories.client_group(b, name="Initech")
    rival = factories.endpoint(rival_group, hostname="initech-secret-dc", tags="dc erp").endpoint
    return {
        "a": a,
        "contoso": contoso,
        "fabrikam": fabrikam,
        "dc01": dc01,
        "erp": erp,
        "fab": fab,
        "b": b,
        "rival_group": rival_group,
        "rival": rival,
    }


@pytest.fixture
def tech(client, world):
    client.force_login(factories.member(world["a"], role=Role.TECHNICIAN).user)
    return client


# --- login --------------------------------------------------------------------------


@pytest.mark.parametrize("path_of", [lambda w: "/", lambda w: f"/endpoints/{w['dc01'].pk}/"])
def test_pages_require_login(client, world, path_of):
    path = path_of(world)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")
    assert world["dc01"].hostname not in response.content.decode()


def test_login_page_logs_a_member_in(client, world):
    membership = factories.member(world["a"])
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"login": membership.user.username, "password": factories.PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert "contoso-dc01" in client.get("/").content.decode()


def test_a_user_with_no_membership_gets_403(client, world):
    user = get_user_model().objects.create_user(username="drifter", password=factories.PASSWORD)
    client.force_login(user)
    for path in ("/", f"/endpoints/{world['dc01'].pk}/", f"/endpoints/{world['rival'].pk}/"):
        response = client.get(path)
        assert response.status_code == 403
        body = response.content.decode()
        assert "contoso-dc01" not in body and "initech-secret-dc" not in body


# --- endpoint list --------------------------------------------------------------------------


def test_endpoint_list_shows_own_tenants_endpoints_with_presence(tech, world):
    connect(world["dc01"], mode="active")
    connect(world["erp"])
    response = tech.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"], world["rival"]) == {
        "contoso-dc01",
        "contoso-app02",
        "fabrikam-pc07",
    }
    assert "initech" not in html.lower() and "Rival MSP" not in html
    assert presence_in(row_of(html, world["dc01"])) == "active"
    assert presence_in(row_of(html, world["erp"])) == "lazy"
    assert presence_in(row_of(html, world["fab"])) == "offline"
    assert "Contoso" in row_of(html, world["dc01"]) and "Fabrikam" in row_of(html, world["fab"])
    assert "Acme MSP" in html  # the signed-in tenant's name in the header


def test_search_by_hostname(tech, world):
    html = tech.get("/", {"q": "DC01"}).content.decode()
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"], world["rival"]) == {"contoso-dc01"}


def test_search_by_tag(tech, world):
    html = tech.get("/", {"q": "erp"}).content.decode()
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"], world["rival"]) == {"contoso-app02"}
    assert '<span class="tag">erp</span>' in html


def test_search_terms_combine(tech, world):
    html = tech.get("/", {"q": "contoso critical"}).content.decode()
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"]) == {"contoso-dc01"}


def test_search_by_client_group(tech, world):
    html = tech.get("/", {"group": world["fabrikam"].slug}).content.decode()
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"]) == {"fabrikam-pc07"}
    html = tech.get("/", {"group": "contoso"}).content.decode()  # by name, case-insensitively
    assert listed_hostnames(html, world["dc01"], world["erp"], world["fab"]) == {"contoso-dc01", "contoso-app02"}


def test_client_group_choices_are_the_tenants_own(tech, world):
    html = tech.get("/").content.decode()
    assert f'value="{world["contoso"].slug}"' in html and f'value="{world["fabrikam"].slug}"' in html
    assert "Initech" not in html


def test_search_for_another_tenants_names_finds_nothing(tech, world):
    for params in ({"q": "initech"}, {"q": "erp"}, {"group": world["rival_group"].slug}, {"group": "Initech"}):
        html = tech.get("/", params).content.decode()
        assert "initech-secret-dc" not in html, params
    assert "No endpoints match" in tech.get("/", {"group": "Initech"}).content.decode()


# --- endpoint detail --------------------------------------------------------------------------


def test_endpoint_detail_shows_machine_context(tech, world):
    machine = {
        "hostname": "contoso-dc01",
        "os": "Windows Server",
        "os_release": "2022",
        "ips": ["10.0.0.5", "fe80::1"],
        "uptime_seconds": 86400,
        "users": ["CONTOSO\\jdoe"],
        "cpu": {"count": 8, "percent": 12.5},
        "memory": {"used_mb": 4096, "total_mb": 16384},
        "disks": [{"mount": "C:", "used_gb": 80, "total_gb": 120}],
    }
    connect(world["dc01"], machine=machine)
    response = tech.get(f"/endpoints/{world['dc01'].pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "contoso-dc01",
        "Windows Server",
        "2022",
        "10.0.0.5, fe80::1",
        "86400",
        "CONTOSO\\jdoe",
        "8 cores, 12.5% busy",
        "4096 of 16384 MB used",
        "C:: 80 of 120 GB",
        "1.2.3",
        "Contoso",
    ):
        assert text in html, text
    assert presence_in(html) == "lazy"
    assert "This endpoint is offline" not in html


def test_endpoint_detail_of_an_offline_endpoint_says_so(tech, world):
    html = tech.get(f"/endpoints/{world['fab'].pk}/").content.decode()
    assert "This endpoint is offline" in html
    assert "No machine context reported yet" in html


def test_endpoint_detail_of_another_tenant_or_unknown_id_is_404(tech, world):
    for pk in (world["rival"].pk, "00000000-0000-0000-0000-000000000000"):
        response = tech.get(f"/endpoints/{pk}/")
        assert response.status_code == 404
        assert "initech-secret-dc" not in response.content.decode()


# --- Django admin ------------------------------------------------------------------------------


@pytest.fixture
def tenant_admin(client, world):
    membership = factories.member(world["a"], role=Role.ADMIN)
    assert membership.user.is_staff and not membership.user.is_superuser
    client.force_login(membership.user)
    client.admin_user = membership.user
    return client


def test_tenant_admin_sees_only_their_tenants_rows(tenant_admin, world):
    own_token, _ = factories.token(world["contoso"])
    rival_token, _ = factories.token(world["rival_group"])

    html = tenant_admin.get("/admin/endpoints/endpoint/").content.decode()
    assert "contoso-dc01" in html and "fabrikam-pc07" in html
    assert "initech" not in html.lower()

    html = tenant_admin.get("/admin/endpoints/clientgroup/").content.decode()
    assert "Contoso" in html and "Fabrikam" in html and "Initech" not in html

    html = tenant_admin.get("/admin/endpoints/enrollmenttoken/").content.decode()
    assert own_token.prefix in html
    assert rival_token.prefix not in html and "Initech" not in html

    html = tenant_admin.get("/admin/endpoints/membership/").content.decode()
    assert "Rival MSP" not in html


def test_every_admin_page_a_tenant_admin_may_open_hides_other_tenants(tenant_admin, world):
    """Every registered model the tenant admin may view: its changelist and add form (with their
    foreign-key choices) show nothing of tenant B. A new admin is covered the day it is registered."""
    from django.contrib import admin as django_admin
    from django.test import RequestFactory

    factories.token(world["rival_group"])
    rival_names = ["initech", "rival msp", world["b"].slug, world["rival"].machine_id.lower()]
    request = RequestFactory().get("/admin/")
    request.user = tenant_admin.admin_user
    opened = []
    for model, model_admin in django_admin.site._registry.items():
        if not model_admin.has_view_permission(request):
            continue
        meta = model._meta
        pages = [f"/admin/{meta.app_label}/{meta.model_name}/"]
        if model_admin.has_add_permission(request):
            pages.append(f"/admin/{meta.app_label}/{meta.model_name}/add/")
        for page in pages:
            response = tenant_admin.get(page)
            assert response.status_code == 200, page
            body = response.content.decode().lower()
            assert not [name for name in rival_names if name in body], page
            opened.append(page)
    assert "/admin/endpoints/endpoint/" in opened and "/admin/endpoints/clientgroup/add/" in opened


def test_tenant_admin_cannot_open_another_tenants_rows(tenant_admin, world):
    for path in (
        f"/admin/endpoints/endpoint/{world['rival'].pk}/change/",
        f"/admin/endpoints/clientgroup/{world['rival_group'].pk}/change/",
        f"/admin/endpoints/clientgroup/{world['rival_group'].pk}/delete/",
    ):
        response = tenant_admin.get(path, follow=True)
        assert "initech" not in response.content.decode().lower(), path
    assert tenant_admin.get("/admin/endpoints/tenant/").status_code == 403
    assert ClientGroup.all_tenants.filter(pk=world["rival_group"].pk).exists()


def test_tenant_admin_form_choices_are_their_tenants_own(tenant_admin, world):
    html = tenant_admin.get(f"/admin/endpoints/endpoint/{world['dc01'].pk}/change/").content.decode()
    assert "Fabrikam" in html and "Initech" not in html
    html = tenant_admin.get("/admin/endpoints/enrollmenttoken/add/").content.decode()
    assert "Contoso" in html and "Initech" not in html


def test_adding_a_client_group_in_admin_assigns_the_admins_tenant(tenant_admin, world):
    response = tenant_admin.post(
        "/admin/endpoints/clientgroup/add/",
        {"name": "Globex", "slug": "globex", "approver_email": "it@globex.test", "tenant": str(world["b"].pk)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    group = ClientGroup.all_tenants.get(slug="globex")
    assert group.tenant_id == world["a"].pk  # a smuggled tenant field is ignored


def test_duplicate_client_group_slug_in_admin_is_a_form_error(tenant_admin, world):
    response = tenant_admin.post(
        "/admin/endpoints/clientgroup/add/", {"name": "Contoso again", "slug": world["contoso"].slug}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert ClientGroup.all_tenants.filter(tenant=world["a"], slug=world["contoso"].slug).count() == 1
    # The same slug as another tenant's group is fine: slugs are unique per tenant.
    response = tenant_admin.post(
        "/admin/endpoints/clientgroup/add/", {"name": "Initech too", "slug": world["rival_group"].slug}
    )
    assert response.status_code == 302
    assert ClientGroup.all_tenants.filter(slug=world["rival_group"].slug).count() == 2


def test_membership_admin_offers_only_the_tenants_own_users(tenant_admin, world):
    rival_person = factories.member(world["b"], username="rival-bob")
    own_person = factories.member(world["a"], username="acme-carol")
    html = tenant_admin.get("/admin/endpoints/membership/add/").content.decode()
    assert "acme-carol" in html and "rival-bob" not in html
    html = tenant_admin.get(f"/admin/endpoints/membership/{own_person.pk}/change/").content.decode()
    assert "acme-carol" in html and "rival-bob" not in html
    response = tenant_admin.get(f"/admin/endpoints/membership/{rival_person.pk}/change/", follow=True)
    assert "rival-bob" not in response.content.decode()
    # Nor can a rival's user be pulled into the tenant by posting its id.
    response = tenant_admin.post(
        f"/admin/endpoints/membership/{own_person.pk}/change/", {"user": rival_person.user.pk, "role": "admin"}
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert Membership.all_tenants.get(pk=rival_person.pk).tenant_id == world["b"].pk


def test_tenant_admin_can_revoke_their_endpoint_in_admin(tenant_admin, world):
    response = tenant_admin.post(
        "/admin/endpoints/endpoint/",
        {"action": "revoke", "_selected_action": [str(world["dc01"].pk), str(world["rival"].pk)]},
    )
    assert response.status_code == 302
    assert Endpoint.all_tenants.get(pk=world["dc01"].pk).status == "revoked"
    assert Endpoint.all_tenants.get(pk=world["rival"].pk).status == "enrolled"


def test_superuser_sees_every_tenant(client, world):
    root = get_user_model().objects.create_superuser(username="root", password=factories.PASSWORD)
    factories.totp(root)  # the server's operator has a second factor (CAISEY_OPERATOR_MFA_REQUIRED)
    client.force_login(root)
    html = client.get("/admin/endpoints/endpoint/").content.decode()
    assert "contoso-dc01" in html and "initech-secret-dc" in html
    html = client.get("/admin/endpoints/clientgroup/").content.decode()
    assert "Contoso" in html and "Initech" in html
    html = client.get("/admin/endpoints/tenant/").content.decode()
    assert "Acme MSP" in html and "Rival MSP" in html


def test_technician_is_not_let_into_the_admin(tech, world):
    response = tech.get("/admin/endpoints/endpoint/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
