"""Incidents: grouping sessions on one outage, the merged timeline (order, attribution, filters),
side by side, status transitions, summary, and tenant isolation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from caisey import tenancy
from caisey.errors import Conflict, Forbidden
from caisey_agent import protocol as p
from endpoints.models import Role
from sessions_app.models import Incident, IncidentSession, IncidentStatus, TranscriptEntry
from sessions_app.selectors import incidents as selectors
from sessions_app.selectors.incidents import TimelineFilters
from sessions_app.services import actions as services
from sessions_app.services import incidents
from sessions_app.services.transcript import transcript_append, transcript_verify
from tests import factories

pytestmark = pytest.mark.django_db


def run_with_output(session, *, actor, text: str):
    action = factories.action(session, actor=actor)
    services.action_output_receive(endpoint=session.endpoint, body=p.ActionOutput(str(action.pk), 0, "status", ""))
    services.action_output_receive(endpoint=session.endpoint, body=p.ActionOutput(str(action.pk), 1, "stdout", text))
    services.action_result_receive(
        endpoint=session.endpoint, body=p.ActionResult(str(action.pk), "succeeded", exit_code=0, result={"text": "ok"})
    )
    return action


class Outage:
    """Two technicians on two endpoints of one client: the ERP outage."""

    def __init__(self):
        self.tenant = factories.tenant("Outage MSP")
        self.group = factories.client_group(self.tenant, name="Acme Manufacturing")
        self.app = factories.endpoint(self.group, hostname="erp-app01").endpoint
        self.db = factories.endpoint(self.group, hostname="erp-db01").endpoint
        self.lead = factories.technician(self.tenant)
        self.alice = factories.technician(self.tenant)
        self.bob = factories.technician(self.tenant)
        self.s_app = factories.support_session(self.app, opened_by=self.alice, reason="app pool")
        self.s_db = factories.support_session(self.db, opened_by=self.bob, reason="db connections")

    def bind(self):
        return tenancy.bind(self.tenant.pk)

    def incident(self, **kwargs) -> Incident:
        with self.bind():
            return incidents.incident_create(
                actor=self.lead,
                tenant_id=self.tenant.pk,
                title=kwargs.pop("title", "ERP down"),
                client_group=self.group,
                **kwargs,
            )

    def add(self, incident, *sessions):
        with self.bind():
            for s in sessions:
                incidents.incident_add_session(actor=self.lead, incident=incident, session=s)


@pytest.fixture
def outage():
    return Outage()


def note(session, text, *, actor, at=None):
    with tenancy.system(), transaction.atomic():  # test setup: an entry written as it was at ``at``
        return transcript_append(
            session=session, kind="note", actor=f"user:{actor.username}", data={"text": text}, at=at
        )


# --- grouping and the merged timeline --------------------------------------------------------------


def test_sessions_are_grouped_and_the_session_record_says_so(outage):
    incident = outage.incident()
    assert incident.status == IncidentStatus.OPEN and incident.client_group == outage.group
    outage.add(incident, outage.s_app, outage.s_db)
    assert set(IncidentSession.all_tenants.filter(incident=incident).values_list("session_id", flat=True)) == {
        outage.s_app.pk,
        outage.s_db.pk,
    }
    for s in (outage.s_app, outage.s_db):
        entry = TranscriptEntry.all_tenants.filter(session=s, kind="session.added_to_incident").get()
        assert entry.data == {"incident": str(incident.pk), "title": "ERP down"}
        assert entry.actor == f"user:{outage.lead.username}"
        assert transcript_verify(session_id=s.pk)[0]
    with outage.bind():
        with pytest.raises(incidents.IncidentError, match="already part"):
            incidents.incident_add_session(actor=outage.lead, incident=incident, session=outage.s_app)
        incidents.incident_remove_session(actor=outage.lead, incident=incident, session=outage.s_db)
        with pytest.raises(incidents.IncidentError, match="not part"):
            incidents.incident_remove_session(actor=outage.lead, incident=incident, session=outage.s_db)
    assert TranscriptEntry.all_tenants.filter(session=outage.s_db, kind="session.removed_from_incident").count() == 1
    assert list(IncidentSession.all_tenants.filter(incident=incident).values_list("session_id", flat=True)) == [
        outage.s_app.pk
    ]


def test_merged_timeline_orders_by_time_then_session_then_index_and_attributes_each_entry(outage):
    incident = outage.incident()
    outage.add(incident, outage.s_app, outage.s_db)
    t0 = timezone.now() + timedelta(minutes=1)
    note(outage.s_db, "db: 512 connections", actor=outage.bob, at=t0)
    note(outage.s_app, "app: pool recycled", actor=outage.alice, at=t0 + timedelta(seconds=2))
    # Same instant in both sessions: the older session first, then by index within a session.
    same = t0 + timedelta(seconds=5)
    note(outage.s_db, "db: same instant 1", actor=outage.bob, at=same)
    note(outage.s_app, "app: same instant", actor=outage.alice, at=same)
    note(outage.s_db, "db: same instant 2", actor=outage.lead, at=same)

    with outage.bind():
        timeline = selectors.incident_timeline(incident=incident)
    items = timeline.items
    keys = [(i.entry.at, [outage.s_app.pk, outage.s_db.pk].index(i.session.pk), i.entry.index) for i in items]
    assert keys == sorted(keys)
    total = TranscriptEntry.all_tenants.filter(session__in=[outage.s_app, outage.s_db]).count()
    assert len(items) == total
    tail = [(i.fields[0].text, i.endpoint, i.technician, i.entry.actor) for i in items[-5:]]
    assert tail == [
        ("db: 512 connections", "erp-db01", outage.bob.username, f"user:{outage.bob.username}"),
        ("app: pool recycled", "erp-app01", outage.alice.username, f"user:{outage.alice.username}"),
        ("app: same instant", "erp-app01", outage.alice.username, f"user:{outage.alice.username}"),
        ("db: same instant 1", "erp-db01", outage.bob.username, f"user:{outage.bob.username}"),
        # Written by the lead in Bob's session: the entry's actor is the lead, the session's technician Bob.
        ("db: same instant 2", "erp-db01", outage.bob.username, f"user:{outage.lead.username}"),
    ]
    assert timeline.technicians == sorted(
        [(str(outage.alice.pk), outage.alice.username), (str(outage.bob.pk), outage.bob.username)], key=lambda t: t[1]
    )
    assert {"note", "session", "session.opened", "session.added_to_incident"} <= set(timeline.kinds)


def test_timeline_filters_by_technician_endpoint_and_kind(outage):
    incident = outage.incident()
    outage.add(incident, outage.s_app, outage.s_db)
    run_with_output(outage.s_app, actor=outage.alice, text="w3wp.exe stopped\n")
    note(outage.s_db, "db note", actor=outage.bob)
    with outage.bind():

        def shown(**filters):
            return selectors.incident_timeline(incident=incident, filters=TimelineFilters(**filters)).items

        by_bob = shown(technician=str(outage.bob.pk))
        assert by_bob and {i.session.pk for i in by_bob} == {outage.s_db.pk}
        on_app = shown(endpoint=str(outage.app.pk))
        assert on_app and {i.endpoint for i in on_app} == {"erp-app01"}
        actions = shown(kind="action")
        expected = TranscriptEntry.all_tenants.filter(session=outage.s_app, kind__startswith="action.")
        assert [(i.session.pk, i.entry.index) for i in actions] == [(outage.s_app.pk, e.index) for e in expected]
        assert {"action.queued", "action.output", "action.result"} <= {i.entry.kind for i in actions}
        outputs = shown(kind="action.output")
        assert [i.fields[-1].text for i in outputs] == ["w3wp.exe stopped\n"]
        assert shown(kind="note", technician=str(outage.alice.pk)) == []
        assert [i.fields[0].text for i in shown(kind="note", endpoint=str(outage.db.pk))] == ["db note"]
        assert shown(kind="actio") == []  # a family is a whole word, not a prefix of one


def test_incident_page_merged_and_side_by_side_with_filters_and_expandable_outputs(client, outage):
    incident = outage.incident()
    outage.add(incident, outage.s_app, outage.s_db)
    run_with_output(outage.s_app, actor=outage.alice, text="EventID 1000 w3wp crashed\n")
    note(outage.s_db, "db: 512 connections", actor=outage.bob)
    client.force_login(outage.lead)
    url = reverse("console:incident_detail", args=[incident.pk])
    page = client.get(url).content.decode()
    assert "ERP down" in page and "Acme Manufacturing" in page
    assert "EventID 1000 w3wp crashed" in page and "db: 512 connections" in page
    assert "<details" in page and "characters</summary>" in page  # outputs are expandable
    assert '<label for="f-technician">' in page and '<label for="f-kind">' in page
    filtered = client.get(url, {"technician": str(outage.bob.pk)}).content.decode()
    assert "db: 512 connections" in filtered and "EventID 1000 w3wp crashed" not in filtered
    side = client.get(url, {"view": "side"}).content.decode()
    assert '<table class="side">' in side
    header = side[side.index('<table class="side">') : side.index("</thead>", side.index('<table class="side">'))]
    assert header.index("erp-app01") < header.index("erp-db01")  # one column per session, oldest first
    row = side[side.index("db: 512 connections") - 2000 : side.index("db: 512 connections")]
    assert row.count("<td>") >= 2  # the entry sits in its session's column, the other column is empty


def test_add_form_lists_recent_sessions_of_the_client_and_adds_them(client, outage):
    incident = outage.incident()
    other_group = factories.client_group(outage.tenant, name="Other Client")
    other = factories.support_session(
        factories.endpoint(other_group, hostname="other-pc").endpoint, opened_by=outage.alice
    )
    client.force_login(outage.lead)
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert '<label for="add-session">' in page
    assert f'value="{outage.s_app.pk}"' in page and f'value="{outage.s_db.pk}"' in page
    assert "other-pc" not in page
    response = client.post(
        reverse("console:incident_add_session", args=[incident.pk]), {"session": str(outage.s_app.pk)}, follow=True
    )
    assert "Added the session on erp-app01" in response.content.decode()
    response = client.post(
        reverse("console:incident_add_session", args=[incident.pk]), {"session": str(other.pk)}, follow=True
    )
    assert "Not added: other-pc belongs to another client" in response.content.decode()
    assert list(IncidentSession.all_tenants.filter(incident=incident).values_list("session_id", flat=True)) == [
        outage.s_app.pk
    ]
    client.post(reverse("console:incident_remove_session", args=[incident.pk]), {"session": str(outage.s_app.pk)})
    assert not IncidentSession.all_tenants.filter(incident=incident).exists()


def test_create_list_and_viewers(client, outage):
    client.force_login(outage.lead)
    response = client.post(
        reverse("console:incident_create"), {"title": "  Printers offline  ", "client_group": str(outage.group.pk)}
    )
    incident = Incident.all_tenants.get()
    assert response.status_code == 302 and response.url == reverse("console:incident_detail", args=[incident.pk])
    assert incident.title == "Printers offline" and incident.created_by == outage.lead
    response = client.post(reverse("console:incident_create"), {"title": " "}, follow=True)
    assert "Incident not created: an incident needs a title" in response.content.decode()
    listing = client.get(reverse("console:incident_list")).content.decode()
    assert "Printers offline" in listing and '<label for="incident-title">' in listing
    assert "Printers offline" not in client.get(reverse("console:incident_list"), {"status": "closed"}).content.decode()

    viewer = factories.member(outage.tenant, role=Role.VIEWER).user
    client.force_login(viewer)
    assert client.get(reverse("console:incident_detail", args=[incident.pk])).status_code == 200
    assert client.post(reverse("console:incident_create"), {"title": "x"}).status_code == 403
    assert client.post(reverse("console:incident_status", args=[incident.pk]), {"status": "closed"}).status_code == 403
    assert (
        client.post(
            reverse("console:incident_add_session", args=[incident.pk]), {"session": str(outage.s_app.pk)}
        ).status_code
        == 403
    )
    assert Incident.all_tenants.count() == 1 and Incident.all_tenants.get().status == IncidentStatus.OPEN


# --- status and summary ------------------------------------------------------------------------------


def test_status_transitions_and_refused_ones(outage):
    incident = outage.incident()
    with outage.bind():
        incidents.incident_set_status(actor=outage.lead, incident=incident, status="resolved")
        incident.refresh_from_db()
        assert incident.status == "resolved" and incident.resolved_at is not None
        assert incident.status_changed_by == f"user:{outage.lead.username}"
        incidents.incident_set_status(actor=outage.lead, incident=incident, status="open")  # it came back
        incident.refresh_from_db()
        assert incident.status == "open" and incident.resolved_at is None
        # An illegal move is a conflict (409 in an API), no longer a plain rejection (deliberate, issue 9).
        with pytest.raises(Conflict, match="cannot become open"):
            incidents.incident_set_status(actor=outage.lead, incident=incident, status="open")
        with pytest.raises(incidents.IncidentError, match="unknown status"):
            incidents.incident_set_status(actor=outage.lead, incident=incident, status="archived")
        incidents.incident_write_summary(
            actor=outage.lead, incident=incident, summary="Replication broke; forced sync."
        )
        incidents.incident_set_status(actor=outage.lead, incident=incident, status="closed")
        incident.refresh_from_db()
        assert incident.status == "closed" and incident.closed_at and incident.resolved_at
        for target in ("open", "resolved", "closed"):
            with pytest.raises(Conflict):
                incidents.incident_set_status(actor=outage.lead, incident=incident, status=target)
        # Closed is final: no more sessions, no rewritten summary.
        with pytest.raises(incidents.IncidentError, match="closed"):
            incidents.incident_add_session(actor=outage.lead, incident=incident, session=outage.s_app)
        with pytest.raises(incidents.IncidentError, match="closed"):
            incidents.incident_write_summary(actor=outage.lead, incident=incident, summary="rewritten")
    incident.refresh_from_db()
    assert incident.status == "closed" and incident.summary == "Replication broke; forced sync."
    assert not IncidentSession.all_tenants.filter(incident=incident).exists()


def test_status_and_summary_through_the_page(client, outage):
    incident = outage.incident()
    client.force_login(outage.lead)
    status_url = reverse("console:incident_status", args=[incident.pk])
    client.post(reverse("console:incident_summary", args=[incident.pk]), {"summary": "DC replication stalled."})
    client.post(status_url, {"status": "resolved"})
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert "Resolved" in page and "DC replication stalled." in page and ">Reopen<" in page
    client.post(status_url, {"status": "closed"})
    response = client.post(status_url, {"status": "open"}, follow=True)
    assert "Status not changed: an incident that is closed cannot become open" in response.content.decode()
    incident.refresh_from_db()
    assert incident.status == "closed" and incident.summary == "DC replication stalled."
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert 'name="summary"' not in page and 'action="%s"' % status_url not in page


# --- tenant isolation --------------------------------------------------------------------------------


def test_another_tenant_cannot_see_or_change_an_incident(client, outage):
    incident = outage.incident(title="Acme secret outage")
    outage.add(incident, outage.s_app)
    other_tenant = factories.tenant("Rival MSP")
    rival = factories.technician(other_tenant)
    rival_session = factories.support_session(
        factories.endpoint(factories.client_group(other_tenant)).endpoint, opened_by=rival
    )
    client.force_login(rival)
    i = incident.pk
    for url in [
        reverse("console:incident_detail", args=[i]),
        reverse("console:incident_export", args=[i]),
        reverse("console:incident_preview", args=[i]),
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert "Acme secret outage" not in response.content.decode()
    for url, body in [
        (reverse("console:incident_status", args=[i]), {"status": "closed"}),
        (reverse("console:incident_summary", args=[i]), {"summary": "pwned"}),
        (reverse("console:incident_add_session", args=[i]), {"session": str(rival_session.pk)}),
        (reverse("console:incident_remove_session", args=[i]), {"session": str(outage.s_app.pk)}),
        (reverse("console:incident_share", args=[i]), {"expires_days": "1"}),
    ]:
        assert client.post(url, body).status_code == 404, url
    assert "Acme secret outage" not in client.get(reverse("console:incident_list")).content.decode()
    incident.refresh_from_db()
    assert incident.status == "open" and incident.summary == ""
    assert list(IncidentSession.all_tenants.filter(incident=incident).values_list("session_id", flat=True)) == [
        outage.s_app.pk
    ]

    # Tenant A's lead cannot pull tenant B's session into A's incident: not found through the page,
    # refused by the service even when handed the object.
    client.force_login(outage.lead)
    response = client.post(reverse("console:incident_add_session", args=[i]), {"session": str(rival_session.pk)})
    assert response.status_code == 404
    with outage.bind(), pytest.raises(Forbidden):
        incidents.incident_add_session(actor=outage.lead, incident=incident, session=rival_session)
    with tenancy.bind(other_tenant.pk), pytest.raises(Forbidden):
        incidents.incident_add_session(actor=rival, incident=incident, session=rival_session)
    assert not IncidentSession.all_tenants.filter(session=rival_session).exists()
    assert not TranscriptEntry.all_tenants.filter(session=rival_session, kind="session.added_to_incident").exists()
    # The tenant-scoped reads fail closed without a tenant and see only their own tenant's incidents.
    with tenancy.bind(other_tenant.pk):
        assert not Incident.objects.filter(pk=i).exists()
        assert not IncidentSession.objects.exists()
