"""Tickets on sessions and incidents: the services (one transaction with the transcript entry), the
tenant admin's link template, and where the link is shown (session and incident pages, the share
page, the PDF and the JSON export)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from caisey.errors import Forbidden
from endpoints.models import Role, Tenant
from endpoints.services import tenant_ticket_link_set
from endpoints.tickets import TicketRejected
from sessions_app.models import Incident, SupportSession, TranscriptEntry
from sessions_app.selectors.review import review_status
from sessions_app.services import incidents
from sessions_app.services import sessions as session_services
from tests import factories
from tests.sessions_app.test_sharing import World, pdf_text

pytestmark = pytest.mark.django_db

HALO = "https://acme.halopsa.com/ticket?id={ticket}"


@pytest.fixture
def world():
    return World()


def admin_of(world):
    return factories.member(world.tenant, role=Role.ADMIN).user


def set_template(world, template: str = HALO) -> None:
    tenant_ticket_link_set(actor=admin_of(world), tenant_id=world.tenant.pk, template=template)


def entries(session) -> list[tuple[str, dict]]:
    return list(TranscriptEntry.all_tenants.filter(session=session).order_by("index").values_list("kind", "data"))


# --- services ---------------------------------------------------------------------------------------


def test_setting_a_ticket_records_each_change_in_the_transcript(world):
    with world.bind():
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket=" 48213 ")
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="48213")  # no change
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="")
    changes = [data for kind, data in entries(world.session) if kind == "session.ticket_set"]
    assert changes == [{"ticket": "48213", "previous": ""}, {"ticket": "", "previous": "48213"}]
    assert SupportSession.all_tenants.get(pk=world.session.pk).ticket == ""


def test_a_bad_ticket_or_a_viewer_changes_nothing(world):
    before = entries(world.session)
    viewer = factories.member(world.tenant, role=Role.VIEWER).user
    outsider = factories.technician(factories.tenant("Other MSP"))
    with world.bind():
        with pytest.raises(TicketRejected):
            session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="a\x1b[31m")
        for actor in (viewer, outsider):
            with pytest.raises(Forbidden):
                session_services.session_set_ticket(actor=actor, session=world.session, ticket="1")
    assert entries(world.session) == before and SupportSession.all_tenants.get(pk=world.session.pk).ticket == ""


def test_a_ticket_change_does_not_make_the_review_stale(world):
    factories.mark_reviewed(world.tech, world.session)
    with world.bind():
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="48213")
        assert review_status(session=world.session).current


def test_an_incident_carries_a_ticket_until_it_is_closed(world):
    incident = factories.incident(world.tenant, actor=world.tech, sessions=[world.session])
    incidents.incident_set_ticket(actor=world.tech, incident=incident, ticket="T20240101.0001")
    incidents.incident_set_ticket(actor=world.tech, incident=incident, ticket="T20240101.0001")  # no change
    assert Incident.all_tenants.get(pk=incident.pk).ticket == "T20240101.0001"
    # Each of its sessions' records says so, once.
    changes = [data for kind, data in entries(world.session) if kind == "incident.ticket_set"]
    assert changes == [{"incident": str(incident.pk), "ticket": "T20240101.0001", "previous": ""}]
    incidents.incident_set_status(actor=world.tech, incident=incident, status="closed")
    with pytest.raises(incidents.IncidentError, match="closed"):
        incidents.incident_set_ticket(actor=world.tech, incident=incident, ticket="other")
    assert Incident.all_tenants.get(pk=incident.pk).ticket == "T20240101.0001"


def test_only_a_tenant_admin_sets_the_link_template(world):
    with pytest.raises(Forbidden, match="only a tenant admin"):
        tenant_ticket_link_set(actor=world.tech, tenant_id=world.tenant.pk, template=HALO)
    outsider = factories.member(factories.tenant("Other MSP"), role=Role.ADMIN).user
    with pytest.raises(Forbidden):
        tenant_ticket_link_set(actor=outsider, tenant_id=world.tenant.pk, template=HALO)
    with pytest.raises(TicketRejected):
        tenant_ticket_link_set(actor=admin_of(world), tenant_id=world.tenant.pk, template="javascript:{ticket}")
    assert Tenant.all_tenants.get(pk=world.tenant.pk).ticket_url_template == ""
    set_template(world)
    assert Tenant.all_tenants.get(pk=world.tenant.pk).ticket_url_template == HALO


# --- console pages ----------------------------------------------------------------------------------


def test_the_settings_page_offers_the_presets_to_admins_only(client, world):
    client.force_login(world.tech)
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert "Ticket references are shown as text." in page and 'name="ticket_url_template"' not in page
    response = client.post(
        reverse("console:tenant_settings"), {"setting": "ticket_link", "ticket_url_template": HALO}, follow=True
    )
    assert "only a tenant admin" in response.content.decode()
    client.force_login(admin_of(world))
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert "ConnectWise Manage" in page and "HaloPSA" in page and "Autotask" in page
    refused = client.post(
        reverse("console:tenant_settings"),
        {"setting": "ticket_link", "ticket_url_template": "javascript:alert(1)//{ticket}"},
        follow=True,
    )
    assert "http:// or https://" in refused.content.decode()
    assert Tenant.all_tenants.get(pk=world.tenant.pk).ticket_url_template == ""
    client.post(reverse("console:tenant_settings"), {"setting": "ticket_link", "ticket_url_template": HALO})
    tenant = Tenant.all_tenants.get(pk=world.tenant.pk)
    assert tenant.ticket_url_template == HALO and tenant.share_requires_review  # the other setting untouched


def test_open_a_session_with_a_ticket_and_change_it_in_the_console(client, world):
    set_template(world)
    client.force_login(world.tech)
    client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"reason": "slow", "ticket": "4821 3"})
    session = SupportSession.all_tenants.filter(endpoint=world.endpoint, reason="slow").get()
    assert session.ticket == "4821 3"
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert 'href="https://acme.halopsa.com/ticket?id=4821%203"' in page
    refused = client.post(reverse("console:session_ticket", args=[session.pk]), {"ticket": "a\x07"}, follow=True)
    assert "printable" in refused.content.decode()
    assert SupportSession.all_tenants.get(pk=session.pk).ticket == "4821 3"
    client.post(reverse("console:session_ticket", args=[session.pk]), {"ticket": "5000"})
    assert SupportSession.all_tenants.get(pk=session.pk).ticket == "5000"
    assert "[ticket 5000]" in client.get(reverse("console:session_list")).content.decode()
    client.force_login(factories.member(world.tenant, role=Role.VIEWER).user)
    assert client.post(reverse("console:session_ticket", args=[session.pk]), {"ticket": "1"}).status_code == 403
    assert SupportSession.all_tenants.get(pk=session.pk).ticket == "5000"


def test_a_bad_ticket_opens_no_session(client, world):
    client.force_login(world.tech)
    before = SupportSession.all_tenants.count()
    client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"ticket": "x" * 65})
    client.post(reverse("console:session_open", args=[world.endpoint.pk]), {"ticket": "a\nb"})
    assert SupportSession.all_tenants.count() == before


def test_incident_ticket_in_the_console(client, world):
    set_template(world)
    client.force_login(world.tech)
    client.post(reverse("console:incident_create"), {"title": "ERP down", "ticket": "77"})
    incident = Incident.all_tenants.get(title="ERP down")
    assert incident.ticket == "77"
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert 'href="https://acme.halopsa.com/ticket?id=77"' in page
    client.post(reverse("console:incident_ticket", args=[incident.pk]), {"ticket": "78"})
    assert Incident.all_tenants.get(pk=incident.pk).ticket == "78"
    assert "[ticket 78]" in client.get(reverse("console:incident_list")).content.decode()


# --- what the client gets -----------------------------------------------------------------------------


def test_the_share_page_pdf_and_json_export_carry_the_ticket_link(client, world):
    set_template(world)
    with world.bind():
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="4821&x")
    link, token = world.link()
    url = "https://acme.halopsa.com/ticket?id=4821%26x"
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert f'href="{url.replace("&", "&amp;")}"' in html or f'href="{url}"' in html
    assert url in pdf_text(client.get(reverse("share_pdf", args=[token])).content).replace("\n", "")
    client.force_login(world.tech)
    data = client.get(reverse("console:share_link_export", args=[link.pk])).json()
    assert data["tickets"] == [{"ticket": "4821&x", "url": url}]
    assert data["sessions"][0]["ticket"] == {"ticket": "4821&x", "url": url}


def test_without_a_template_the_ticket_is_text(client, world):
    with world.bind():
        session_services.session_set_ticket(actor=world.tech, session=world.session, ticket="4821")
    _, token = world.link()
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert '<span class="ticket">4821</span>' in html and "ticket-link" not in html
