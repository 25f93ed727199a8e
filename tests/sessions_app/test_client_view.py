"""The client's view of a record (issue 10, item 8): the story selector, the kind sentences, the
share page (story first, event log folded, no raw keys or float noise) and the review gate on
share links (with the tenant admin's setting)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from caisey import tenancy
from caisey.errors import Forbidden
from endpoints.models import Role, Tenant
from endpoints.services import tenant_share_review_set
from sessions_app.kinds import TranscriptKind as K
from sessions_app.models import ShareLink, TranscriptEntry
from sessions_app.selectors import sharing as sharing_selectors
from sessions_app.selectors.review import review_status
from sessions_app.selectors.story import KIND_SENTENCES, record_story, sentence
from sessions_app.services import review, sharing
from sessions_app.services import sessions as session_services
from sessions_app.services.transcript import transcript_append
from tests import factories
from tests.sessions_app.test_sharing import SECRET, World, run_with_output

pytestmark = pytest.mark.django_db

NOISE = "47.620999999999995"
RAW_KEYS = ("latency_ms", "exit_code", "expires_at", "action.queued", "action.result", "result.text")


@pytest.fixture
def world():
    w = World()
    w.tech.first_name, w.tech.last_name = "Dana", "Reyes"
    w.tech.save()
    with w.bind():
        # A delivery with a float-noise latency, as the outbox records it.
        transcript_append(
            session=w.session,
            kind=K.ACTION_DISPATCHED,
            actor="bridge",
            action=w.action,
            data={"attempts": 1, "latency_ms": float(NOISE)},
        )
        session_services.session_add_note(actor=w.tech, session=w.session, text="Restarted the ERP service after this.")
    return w


def share(world, **kwargs):
    with world.bind():
        return sharing.share_link_create(
            actor=world.tech, session=world.session, expires_in=timedelta(days=1), **kwargs
        )


# --- the sentences -------------------------------------------------------------------------------


def test_every_kind_reads_as_a_sentence_and_unknown_kinds_still_read():
    for kind in K:
        text = sentence(kind, "Dana")
        assert "." not in text and "_" not in text, (kind, text)
        assert text[:1].isupper() or text.startswith("Dana"), (kind, text)
    assert sentence(K.SESSION_OPENED, "dana") == "dana started a support session"  # a name keeps its case
    assert sentence("backup.snapshot_taken", "dana") == "Backup snapshot taken (by dana)"
    assert sentence("backup.snapshot_taken") == "Backup snapshot taken"
    # Every kind has a decided wording (None: event log only), so a new kind cannot reach a client raw.
    assert set(KIND_SENTENCES) == {k.value for k in K}


# --- the story -----------------------------------------------------------------------------------


def test_the_story_tells_what_was_checked_in_order_by_whom_with_notes(world):
    second = run_with_output(
        world.session, actor=world.tech, text="tcp ok\n", kind="tcp_connect", params={"host": "erp-db01", "port": 1433}
    )
    with world.bind():
        review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)
        output = TranscriptEntry.objects.filter(action=second, kind=K.ACTION_RESULT).get()
        review.review_note_add(
            actor=world.tech, session=world.session, text="Port open: the DB was up.", about_entry=output
        )
        review.record_review_complete(actor=world.tech, session=world.session)
        story = record_story(sharing_selectors.current_record(session=world.session))
    whats = [s.what for s in story.steps]
    assert whats == [
        "Dana Reyes started a support session on acme-app01: ERP down",
        "Checked: System summary",
        "Dana Reyes wrote a note",
        "Checked: TCP connect test (host erp-db01, port 1433, timeout 5 s)",
        "Dana Reyes reviewed the record",
    ]
    assert [s.at for s in story.steps] == sorted(s.at for s in story.steps)
    summary, note, tcp = story.steps[1], story.steps[2], story.steps[3]
    assert summary.who == "Dana Reyes" and summary.kind == "check"
    assert summary.outcome.startswith("Completed") and summary.found == "summary done"
    assert "password=[redacted]" in summary.output and SECRET not in summary.output
    assert note.found == "Restarted the ERP service after this."
    assert [(n.by, n.text) for n in tcp.notes] == [("Dana Reyes", "Port open: the DB was up.")]
    assert story.reviews and story.reviews[0].startswith("Dana Reyes, ") and story.reviews[0].endswith("UTC")
    assert story.technicians == ["Dana Reyes"] and story.redacted
    # Plain words only: no float noise, no JSON keys, no kind names, anywhere in the story.
    flat = repr(story)
    assert NOISE not in flat and not re.search(r"\d\.\d{5,}", flat)
    for key in RAW_KEYS:
        assert key not in " ".join(f"{s.what} {s.outcome} {s.details} {s.found}" for s in story.steps), key


def test_a_withheld_action_keeps_its_place_but_not_its_content(world):
    with world.bind():
        queued = TranscriptEntry.objects.get(session=world.session, kind=K.ACTION_QUEUED)
        review.entry_redact(actor=world.tech, session=world.session, entry=queued)
        story = record_story(sharing_selectors.current_record(session=world.session))
    check = story.steps[1]
    assert check.what == "A check (its details were withheld after review)" and check.withheld
    assert check.who == "Dana Reyes" and check.outcome.startswith("Completed")


# --- the page ------------------------------------------------------------------------------------


def test_the_share_page_tells_the_story_and_folds_the_event_log(client, world):
    _, token = world.link()
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert "What was done, in order" in html and "Checked: System summary" in html
    assert "Dana Reyes started a support session on acme-app01: ERP down" in html
    assert "Restarted the ERP service after this." in html and "Reviewed by" in html
    story, log = html.split('<section aria-labelledby="log-h"', 1)
    assert '<details class="event-log">' in log and '<details class="event-log" open' not in log
    assert "Delivery time" in log and "48 ms" in log  # formatted, in the folded log
    assert "Dana Reyes asked for a check to run" in log  # people by name there too
    assert NOISE not in html and not re.search(r"\d\.\d{5,}", html)
    for key in ("latency_ms", "exit_code", ">action.queued<", "result.text"):
        assert key not in html, key
    assert re.search(r"\d{1,2} \w{3} \d{4}, \d\d:\d\d:\d\d UTC", story)  # times with their zone


# --- the review gate -----------------------------------------------------------------------------


def test_a_link_needs_a_reviewed_record(world):
    with pytest.raises(review.ReviewError, match="this record has not been reviewed"):
        share(world)
    assert not ShareLink.all_tenants.exists()
    with world.bind():
        entry = review.record_review_complete(actor=world.tech, session=world.session)
    assert entry.kind == K.REVIEW_COMPLETED and entry.data["reviewer"] == "Dana Reyes"
    assert entry.actor == f"user:{world.tech.username}"
    link, _ = share(world)
    assert ShareLink.all_tenants.filter(pk=link.pk).exists()
    # Reviewing again with nothing new is refused; review bookkeeping does not make it stale.
    with world.bind(), pytest.raises(review.ReviewError, match="already reviewed"):
        review.record_review_complete(actor=world.tech, session=world.session)


def test_a_record_that_changed_after_its_review_needs_a_new_one(world):
    factories.mark_reviewed(world.tech, world.session)
    run_with_output(world.session, actor=world.tech, text="later\n")
    with world.bind():
        assert not review_status(session=world.session).current
    with pytest.raises(review.ReviewError, match=r"changed after Dana Reyes reviewed it \(\d+ new entries\)"):
        share(world)
    factories.mark_reviewed(world.tech, world.session)
    share(world)


def test_an_incident_needs_every_session_reviewed(world):
    other = factories.support_session(world.endpoint, opened_by=world.tech)
    incident = factories.incident(world.tenant, actor=world.tech, sessions=[world.session, other])
    factories.mark_reviewed(world.tech, world.session)
    with world.bind(), pytest.raises(review.ReviewError, match="the session on acme-app01 has not been reviewed"):
        sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))
    factories.mark_reviewed(world.tech, other)
    with world.bind():
        sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))


def test_a_tenant_admin_may_turn_the_review_off_and_only_an_admin(world):
    admin = factories.member(world.tenant, role=Role.ADMIN).user
    with pytest.raises(Forbidden, match="only a tenant admin"):
        tenant_share_review_set(actor=world.tech, tenant_id=world.tenant.pk, required=False)
    outsider = factories.member(factories.tenant("Other MSP"), role=Role.ADMIN).user
    with pytest.raises(Forbidden):
        tenant_share_review_set(actor=outsider, tenant_id=world.tenant.pk, required=False)
    assert Tenant.all_tenants.get(pk=world.tenant.pk).share_requires_review
    tenant_share_review_set(actor=admin, tenant_id=world.tenant.pk, required=False)
    assert not Tenant.all_tenants.get(pk=world.tenant.pk).share_requires_review
    share(world)  # no review needed now


def test_the_settings_page_is_editable_by_a_tenant_admin_only(client, world):
    client.force_login(world.tech)
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert "A record must be reviewed before it is shared." in page and 'name="share_requires_review"' not in page
    response = client.post(reverse("console:tenant_settings"), {}, follow=True)
    assert "only a tenant admin" in response.content.decode()
    assert Tenant.all_tenants.get(pk=world.tenant.pk).share_requires_review
    admin = factories.member(world.tenant, role=Role.ADMIN).user
    client.force_login(admin)
    page = client.get(reverse("console:tenant_settings")).content.decode()
    assert 'name="share_requires_review" checked' in page
    response = client.post(reverse("console:tenant_settings"), {}, follow=True)
    assert "Records can now be shared without a review." in response.content.decode()
    assert not Tenant.all_tenants.get(pk=world.tenant.pk).share_requires_review
    client.post(reverse("console:tenant_settings"), {"share_requires_review": "on"})
    assert Tenant.all_tenants.get(pk=world.tenant.pk).share_requires_review


def test_the_console_offers_the_review_step_instead_of_sharing(client, world):
    client.force_login(world.tech)
    url = reverse("console:session_review", args=[world.session.pk])
    page = client.get(url).content.decode()
    assert "Not reviewed yet." in page and "Mark as reviewed" in page and "Create share link" not in page
    response = client.post(
        reverse("console:session_share", args=[world.session.pk]), {"expires_days": "1"}, follow=True
    )
    assert "Not shared: this record has not been reviewed." in response.content.decode()
    assert not ShareLink.all_tenants.exists()
    response = client.post(reverse("console:review_complete", args=[world.session.pk]), follow=True)
    page = response.content.decode()
    assert "Marked reviewed" in page and "Reviewed by <strong>Dana Reyes</strong>" in page
    assert "Create share link" in page and "Mark as reviewed" not in page
    assert (
        client.post(reverse("console:session_share", args=[world.session.pk]), {"expires_days": "1"}).status_code == 200
    )
    assert ShareLink.all_tenants.count() == 1


def test_the_incident_page_points_to_the_sessions_to_review(client, world):
    incident = factories.incident(world.tenant, actor=world.tech, sessions=[world.session])
    client.force_login(world.tech)
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert "Review the session on acme-app01" in page and "Create share link" not in page
    factories.mark_reviewed(world.tech, world.session)
    page = client.get(reverse("console:incident_detail", args=[incident.pk])).content.decode()
    assert "Create share link" in page and "Review the session on acme-app01" not in page


def test_another_tenants_record_is_not_found_for_the_review_step(client, world):
    other = factories.technician(factories.tenant("Other MSP"))
    client.force_login(other)
    before = TranscriptEntry.all_tenants.filter(session=world.session).count()
    assert client.post(reverse("console:review_complete", args=[world.session.pk])).status_code == 404
    assert TranscriptEntry.all_tenants.filter(session=world.session).count() == before
    with tenancy.bind(other.membership.tenant_id), pytest.raises(Forbidden):
        review.record_review_complete(actor=other, session=world.session)
    viewer = factories.member(world.tenant, role=Role.VIEWER).user
    client.force_login(viewer)
    assert client.post(reverse("console:review_complete", args=[world.session.pk])).status_code == 403


# --- the API -------------------------------------------------------------------------------------


def test_the_api_rejects_a_link_to_an_unreviewed_record_and_offers_the_review_step(world):
    from tests.api.test_api import V1, client_for

    api = client_for(world.tech)
    sid = world.session.pk
    response = api.post(f"{V1}/sessions/{sid}/share-links/", {"expires_in_days": 3}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "rejected"
    assert response.json()["detail"].startswith("this record has not been reviewed. Review the record")
    assert not ShareLink.all_tenants.exists()
    response = api.post(f"{V1}/sessions/{sid}/review/", format="json")
    assert response.status_code == 201 and response.json()["reviewed_by"] == "Dana Reyes"
    again = api.post(f"{V1}/sessions/{sid}/review/", format="json")
    assert again.status_code == 400 and "already reviewed" in again.json()["detail"]
    response = api.post(f"{V1}/sessions/{sid}/share-links/", {"expires_in_days": 3, "label": "Dana"}, format="json")
    assert response.status_code == 201 and re.search(r"/share/shr_[A-Za-z0-9_-]+/$", response.json()["url"])
    assert ShareLink.all_tenants.get(pk=response.json()["id"]).label == "Dana"
    bad = api.post(f"{V1}/sessions/{sid}/share-links/", {"expires_in_days": 400}, format="json")
    assert bad.status_code == 400 and ShareLink.all_tenants.count() == 1


def test_the_api_follows_the_tenant_setting_and_tenancy(world):
    from tests.api.test_api import V1, client_for

    sid = world.session.pk
    viewer = client_for(factories.member(world.tenant, role=Role.VIEWER).user)
    assert viewer.post(f"{V1}/sessions/{sid}/review/", format="json").status_code == 403
    outsider = client_for(factories.technician(factories.tenant("Other MSP")))
    assert outsider.post(f"{V1}/sessions/{sid}/review/", format="json").status_code == 404
    assert outsider.post(f"{V1}/sessions/{sid}/share-links/", {}, format="json").status_code == 404
    admin = factories.member(world.tenant, role=Role.ADMIN).user
    tenant_share_review_set(actor=admin, tenant_id=world.tenant.pk, required=False)
    response = client_for(world.tech).post(f"{V1}/sessions/{sid}/share-links/", {}, format="json")
    assert response.status_code == 201 and ShareLink.all_tenants.count() == 1
    with world.bind():
        assert review_status(session=world.session).index is None  # shared without a review, as the tenant chose


@pytest.mark.django_db(transaction=True)
def test_the_story_says_who_gave_permission_and_who_cancelled():
    from tests.sessions_app.test_approvals import ack, prompt_of, runtime, shell
    from tests.sessions_app.test_approvals import world as approval_world

    enrolled, tech, session = approval_world()
    approved = shell(tech, session, "ipconfig /flushdns")
    prompt = prompt_of(approved)
    ack(prompt)
    runtime(enrolled, prompt, "approved")
    cancelled = shell(tech, session, "ipconfig /release")
    with tenancy.bind(session.tenant_id):
        from sessions_app.services import actions as action_services

        action_services.action_cancel(actor=tech, action=cancelled)
        story = record_story(sharing_selectors.current_record(session=session))
    first, second = (s for s in story.steps if s.kind == "check")
    assert first.what == "Ran a command: ipconfig /flushdns" and first.who == tech.username
    assert ("Approval", "Permission given by alice") in first.details
    assert second.what == "Ran a command: ipconfig /release"
    assert second.outcome == f"Cancelled by {tech.username}"
    assert ("Approval", "The request for permission was withdrawn") in second.details


def test_a_follow_up_reads_with_its_time(world):
    from datetime import UTC, datetime

    from sessions_app.services.followups import follow_up_schedule

    with world.bind():
        follow_up_schedule(
            actor=world.tech, session=world.session, at=datetime(2031, 5, 6, 9, 30, tzinfo=UTC), note="Check the backup"
        )
        story = record_story(sharing_selectors.current_record(session=world.session))
    step = story.steps[-1]
    assert (
        step.what == "Dana Reyes scheduled a follow-up for 6 May 2031, 09:30:00 UTC"
        and step.found == "Check the backup"
    )
