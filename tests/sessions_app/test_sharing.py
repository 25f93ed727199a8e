"""Review and share: redactions, review notes, share links (expiry, revocation, wrong tokens, view
log, rate limit), what a link shows (reviewed_upto), PDF and JSON export, tenant isolation."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from caisey import tenancy
from caisey.errors import Forbidden
from caisey_agent import protocol as p
from endpoints.models import Role
from sessions_app.exports import json as json_export
from sessions_app.models import ShareLink, ShareLinkView, TranscriptEntry
from sessions_app.services import actions as services
from sessions_app.services import incidents, review, sharing
from sessions_app.services import sessions as session_services
from sessions_app.services.transcript import GENESIS, transcript_verify
from sessions_app.views import public
from sessions_app.views.share import SHARE_LINKS
from tests import factories

pytestmark = pytest.mark.django_db

SECRET = "Hunter2Secret9"
OUTPUT = f"connecting to erp-db01 with password={SECRET} ...\nlogin failed: 18456\n"


# --- building a world --------------------------------------------------------------------------------


def run_with_output(session, *, actor, text: str, kind: str = "system_summary", params=None):
    """An action that ran on the endpoint and streamed ``text``, then succeeded."""
    action = factories.action(session, actor=actor, kind=kind, params=params)
    endpoint = session.endpoint
    services.action_output_receive(endpoint=endpoint, body=p.ActionOutput(str(action.pk), 0, "status", ""))
    services.action_output_receive(endpoint=endpoint, body=p.ActionOutput(str(action.pk), 1, "stdout", text))
    services.action_result_receive(
        endpoint=endpoint,
        body=p.ActionResult(
            str(action.pk), "succeeded", exit_code=0, result={"text": "summary done", "data": {"ok": True}}
        ),
    )
    return action


class World:
    def __init__(self, label: str = "Acme"):
        self.tenant = factories.tenant(f"{label} MSP")
        self.group = factories.client_group(self.tenant, name=f"{label} Client")
        factories.policy(self.group, requires="none")  # about sharing records: commands run unasked here
        self.endpoint = factories.endpoint(self.group, hostname=f"{label.lower()}-app01").endpoint
        self.tech = factories.technician(self.tenant)
        self.session = factories.support_session(self.endpoint, opened_by=self.tech, reason="ERP down")
        self.action = run_with_output(self.session, actor=self.tech, text=OUTPUT)

    def bind(self):
        return tenancy.bind(self.tenant.pk)

    def entry(self, kind: str) -> TranscriptEntry:
        return TranscriptEntry.all_tenants.filter(session=self.session, kind=kind).order_by("index").first()

    def link(self, **kwargs) -> tuple[ShareLink, str]:
        """A link made after the review step (the tenant requires one by default)."""
        factories.mark_reviewed(self.tech, self.session)
        with self.bind():
            return sharing.share_link_create(
                actor=self.tech, session=self.session, expires_in=kwargs.pop("expires_in", timedelta(days=7)), **kwargs
            )


@pytest.fixture
def world():
    return World()


def pdf_text(data: bytes) -> str:
    """The text of a PDF as a reader copies it (pypdf's extraction), pages joined."""
    assert data.startswith(b"%PDF")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def chain_of(session) -> list[tuple[int, str, str, dict]]:
    return list(
        TranscriptEntry.all_tenants.filter(session=session)
        .order_by("index")
        .values_list("index", "hash", "prev_hash", "data")
    )


# --- redaction -----------------------------------------------------------------------------------------


def test_redacting_part_of_an_output_hides_it_everywhere_the_client_looks(client, world):
    output = world.entry("action.output")
    original = (output.hash, output.prev_hash, json.dumps(output.data, sort_keys=True))
    with world.bind():
        redaction = review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment=SECRET)

    # The redaction is itself a transcript entry, naming the entry and the ranges, never the secret.
    assert redaction.kind == "review.redaction" and redaction.index > output.index
    assert redaction.data["entry_id"] == str(output.pk) and redaction.data["whole"] is False
    start = output.data["data"].index(SECRET)
    assert redaction.data["ranges"] == [{"path": ["data"], "spans": [[start, start + len(SECRET)]]}]
    assert redaction.data["fragment_length"] == len(SECRET)
    assert SECRET not in json.dumps(redaction.data)
    assert redaction.data["fragment_sha256"] == hashlib.sha256((output.hash + "\x00" + SECRET).encode()).hexdigest()
    # The original is untouched and the chain still verifies.
    output.refresh_from_db()
    assert (output.hash, output.prev_hash, json.dumps(output.data, sort_keys=True)) == original
    assert SECRET in output.data["data"]
    assert transcript_verify(session_id=world.session.pk) == (True, None, "")

    link, token = world.link()
    page = client.get(reverse("share_view", args=[token]))
    html = page.content.decode()
    assert page.status_code == 200
    assert SECRET not in html
    assert "[redacted]" in html and "login failed: 18456" in html and "password=" in html

    pdf = client.get(reverse("share_pdf", args=[token]))
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    text = pdf_text(pdf.content)
    assert "login failed: 18456" in text and "[redacted]" in text  # the extraction works...
    assert SECRET not in text and SECRET.encode() not in pdf.content  # ...and the secret is not there

    client.force_login(world.tech)
    export = client.get(reverse("console:share_link_export", args=[link.pk]))
    assert export.status_code == 200
    assert SECRET not in export.content.decode()
    data = export.json()
    shown = next(e for e in data["entries"] if e["id"] == str(output.pk))
    fields = {f["label"]: f["text"] for f in shown["fields"]}
    assert shown["redacted"] == "part" and fields["output"] == OUTPUT.replace(SECRET, "[redacted]")
    manifest = {m["id"]: m for m in data["manifest"]["entries"]}
    assert manifest[str(output.pk)]["hash"] == output.hash  # the original's hash, for verification

    # Technicians see the original with the redaction marked.
    review_page = client.get(reverse("console:session_review", args=[world.session.pk])).content.decode()
    assert f'<mark class="redacted-orig">{SECRET}' in review_page
    assert "partly redacted when shared" in review_page


def test_withholding_a_whole_entry(client, world):
    with world.bind():
        session_services.session_add_note(actor=world.tech, session=world.session, text="VPN pin is 471193")
        note = world.entry("note")
        redaction = review.entry_redact(actor=world.tech, session=world.session, entry=note)
    assert redaction.data["whole"] is True and redaction.data["index"] == note.index
    assert "471193" not in json.dumps(redaction.data)
    note.refresh_from_db()
    assert note.data["text"] == "VPN pin is 471193"
    assert transcript_verify(session_id=world.session.pk)[0]

    _, token = world.link()
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert "471193" not in html and "VPN pin" not in html
    assert "This entry was withheld after review" in html
    assert f"the whole of entry #{note.index} was redacted" in html  # no kind names for the client
    text = pdf_text(client.get(reverse("share_pdf", args=[token])).content)
    assert "VPN pin" not in text and "withheld after review" in text

    with world.bind(), pytest.raises(review.ReviewError, match="already redacted"):
        review.entry_redact(actor=world.tech, session=world.session, entry=note)


def test_redacting_a_fragment_everywhere_covers_every_entry_that_holds_it(client, world):
    command = f"mysql -u erp -p{SECRET} -e 'show processlist'"
    run_with_output(
        world.session, actor=world.tech, kind="shell", params={"command": command}, text=f"$ {command}\nId User Host\n"
    )
    with world.bind():
        holders = [e for e in TranscriptEntry.objects.filter(session=world.session) if SECRET in json.dumps(e.data)]
        written = review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)
    assert len(holders) >= 3  # the first output, the queued command, the second output
    assert sorted(w.data["entry_id"] for w in written) == sorted(str(e.pk) for e in holders)

    link, token = world.link()
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert SECRET not in html and "show processlist" in html
    client.force_login(world.tech)
    assert SECRET not in client.get(reverse("console:share_link_export", args=[link.pk])).content.decode()
    assert SECRET not in client.get(reverse("console:session_export", args=[world.session.pk])).content.decode()
    with world.bind(), pytest.raises(review.ReviewError, match="does not occur"):
        review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)


def test_refused_redactions_write_nothing(client, world):
    output = world.entry("action.output")
    count = TranscriptEntry.all_tenants.filter(session=world.session).count()
    with world.bind():
        with pytest.raises(review.ReviewError, match="does not occur"):
            review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment="not-in-there")
        with pytest.raises(review.ReviewError, match="give the text"):
            review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment="   ")
        redaction = review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment=SECRET)
        with pytest.raises(review.ReviewError, match="already redacted"):
            review.entry_redact(actor=world.tech, session=world.session, entry=output, text_fragment=SECRET)
        with pytest.raises(review.ReviewError, match="cannot itself be redacted"):
            review.entry_redact(actor=world.tech, session=world.session, entry=redaction)
    assert TranscriptEntry.all_tenants.filter(session=world.session).count() == count + 1

    viewer = factories.member(world.tenant, role=Role.VIEWER).user
    client.force_login(viewer)
    response = client.post(
        reverse("console:review_redact", args=[world.session.pk]), {"entry": str(output.index), "whole": "1"}
    )
    assert response.status_code == 403
    assert TranscriptEntry.all_tenants.filter(session=world.session).count() == count + 1


def test_review_page_redacts_and_notes_through_the_forms(client, world):
    output = world.entry("action.output")
    client.force_login(world.tech)
    url = reverse("console:review_redact", args=[world.session.pk])
    response = client.post(url, {"entry": str(output.index), "fragment": SECRET}, follow=True)
    assert f"Entry #{output.index} redacted" in response.content.decode()
    response = client.post(url, {"entry": str(output.index), "fragment": "nope-nope"}, follow=True)
    assert "Not redacted: that text does not occur" in response.content.decode()
    assert client.post(url, {"entry": "9999", "fragment": "x"}).status_code == 404
    client.post(
        reverse("console:review_note", args=[world.session.pk]),
        {"entry": str(output.index), "text": "Error 18456 is a failed SQL login."},
    )
    client.post(reverse("console:review_note", args=[world.session.pk]), {"text": "We reset the service account."})
    kinds = list(
        TranscriptEntry.all_tenants.filter(session=world.session, kind__startswith="review.")
        .order_by("index")
        .values_list("kind", flat=True)
    )
    assert kinds == ["review.redaction", "review.note", "review.note"]

    _, token = world.link()
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert SECRET not in html
    # The note about the output is shown with it; the general note on its own.
    item = html[html.index(f'id="e-{world.session.pk}-{output.index}"') :]
    item = item[: item.index("</li>")]
    assert "Reviewer's note" in item and "Error 18456 is a failed SQL login." in item
    assert "We reset the service account." in html


# --- share links ---------------------------------------------------------------------------------------


def test_a_link_is_an_unguessable_token_stored_only_as_its_hash(world):
    link, token = world.link(label="Dana at Acme")
    assert token.startswith("shr_") and len(token) >= 4 + 43  # 256 bits, url-safe base64
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    row = ShareLink.all_tenants.filter(pk=link.pk).values().get()
    assert token not in json.dumps(row, default=str) and token[4:] not in json.dumps(row, default=str)
    assert link.reviewed_upto == {str(world.session.pk): link.reviewed_upto[str(world.session.pk)]}
    assert public.resolve(SHARE_LINKS, token) == link
    # Creating it is part of the session's record, after what the link shows.
    created = world.entry("share.link_created")
    assert created.data["link"] == str(link.pk) and created.index > link.reviewed_upto[str(world.session.pk)]


def test_view_log_records_each_view_with_address_and_browser(client, world):
    link, token = world.link()
    client.get(reverse("share_view", args=[token]), REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="ClientBrowser/1.0")
    client.get(reverse("share_pdf", args=[token]), REMOTE_ADDR="198.51.100.4", HTTP_USER_AGENT="PdfFetcher/2")
    views = list(ShareLinkView.all_tenants.filter(link=link).order_by("at", "id").values("ip", "user_agent", "format"))
    assert views == [
        {"ip": "203.0.113.9", "user_agent": "ClientBrowser/1.0", "format": "page"},
        {"ip": "198.51.100.4", "user_agent": "PdfFetcher/2", "format": "pdf"},
    ]
    client.force_login(world.tech)
    page = client.get(reverse("console:session_review", args=[world.session.pk])).content.decode()
    assert "203.0.113.9" in page and "ClientBrowser/1.0" in page and "2 views" in page


def test_expired_revoked_and_wrong_tokens_get_the_same_plain_page(client, world):
    good, good_token = world.link()
    expired, expired_token = world.link()
    revoked, revoked_token = world.link()
    ShareLink.all_tenants.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with world.bind():
        sharing.share_link_revoke(actor=world.tech, link=revoked)
    assert world.entry("share.link_revoked").data["link"] == str(revoked.pk)

    assert client.get(reverse("share_view", args=[good_token])).status_code == 200
    answers = {
        name: client.get(f"/share/{token}/")
        for name, token in [
            ("expired", expired_token),
            ("revoked", revoked_token),
            ("wrong", "shr_" + "A" * 43),
            ("garbage", "not-a-token"),
            ("almost", good_token[:-1] + ("A" if good_token[-1] != "A" else "B")),
        ]
    }
    bodies = {a.content for a in answers.values()}
    assert {a.status_code for a in answers.values()} == {404}
    assert len(bodies) == 1, "every invalid case must look the same"
    body = bodies.pop().decode()
    assert "This link is not valid" in body
    for hint in ("expired on", "revoked on", "does not exist", world.endpoint.hostname, world.tenant.name):
        assert hint not in body
    for token in (expired_token, revoked_token):
        assert client.get(f"/share/{token}/pdf").status_code == 404
    # Refused requests are not views.
    assert not ShareLinkView.all_tenants.filter(link__in=[expired, revoked]).exists()
    with world.bind(), pytest.raises(review.ReviewError, match="already revoked"):
        sharing.share_link_revoke(actor=world.tech, link=revoked)


def test_revoking_from_the_console(client, world):
    link, token = world.link()
    client.force_login(world.tech)
    response = client.post(reverse("console:share_link_revoke", args=[link.pk]), follow=True)
    assert "The link was revoked" in response.content.decode()
    link.refresh_from_db()
    assert link.revoked_at is not None and link.revoked_by == world.tech
    client.logout()
    assert client.get(reverse("share_view", args=[token])).status_code == 404


def test_guessing_tokens_is_rate_limited_per_address_and_token_prefix(client, world, settings):
    """Deliberate change (issue 9, item 5): the limit is keyed by address and token prefix, so a
    client guessing tokens from a shared address no longer locks out a real link's holder there;
    a per-address budget (public.ADDRESS_FACTOR times as large) still bounds guessing."""
    settings.CAISEY = {**settings.CAISEY, "RATE_SHARE_PER_IP": (3, 60)}
    _, token = world.link()
    for i in range(3):
        assert client.get(f"/share/shr_guess{i:040d}/", REMOTE_ADDR="192.0.2.1").status_code == 404
    blocked = client.get(f"/share/shr_guess{9:040d}/", REMOTE_ADDR="192.0.2.1")
    assert blocked.status_code == 429 and "Too many attempts" in blocked.content.decode()
    assert client.get(f"/share/shr_guess{8:040d}/pdf", REMOTE_ADDR="192.0.2.1").status_code == 429
    # The real link still opens from that address, and from another one.
    assert client.get(reverse("share_view", args=[token]), REMOTE_ADDR="192.0.2.1").status_code == 200
    assert client.get(reverse("share_view", args=[token]), REMOTE_ADDR="192.0.2.2").status_code == 200


def test_a_link_shows_what_was_reviewed_and_later_redactions_still_apply(client, world):
    with world.bind():
        session_services.session_add_note(
            actor=world.tech, session=world.session, text="reviewed note: before the link"
        )
    link, token = world.link()
    with world.bind():
        session_services.session_add_note(actor=world.tech, session=world.session, text="late note: after the link")
        review.review_note_add(actor=world.tech, session=world.session, text="late review note")
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert "reviewed note: before the link" in html
    assert "late note: after the link" not in html and "late review note" not in html
    assert "share.link_created" not in html
    assert SECRET in html  # not yet redacted...
    with world.bind():
        review.entry_redact(
            actor=world.tech, session=world.session, entry=world.entry("action.output"), text_fragment=SECRET
        )
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert SECRET not in html and "[redacted]" in html  # ...a redaction made after sharing applies at once
    assert "late note: after the link" not in html


def test_json_export_manifest_lists_the_chain_hashes(client, world):
    with world.bind():
        review.entry_redact(
            actor=world.tech, session=world.session, entry=world.entry("action.output"), text_fragment=SECRET
        )
    link, _ = world.link()
    client.force_login(world.tech)
    data = client.get(reverse("console:share_link_export", args=[link.pk])).json()
    upto = link.reviewed_upto[str(world.session.pk)]
    chain = [c for c in chain_of(world.session) if c[0] <= upto]
    manifest = data["manifest"]
    assert [(m["index"], m["hash"], m["prev_hash"]) for m in manifest["entries"]] == [c[:3] for c in chain]
    assert manifest["entries"][0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(manifest["entries"], manifest["entries"][1:], strict=False))
    assert (
        manifest["sha256"]
        == hashlib.sha256(
            json.dumps(manifest["entries"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )
    assert data["sessions"][0]["chain"]["verified"] is True and data["sessions"][0]["shows_upto"] == upto
    assert data["format"] == json_export.FORMAT and data["subject"] == {
        "type": "session",
        "id": str(world.session.pk),
    }
    assert [e["index"] for e in data["entries"]] == [c[0] for c in chain]


def test_an_incident_link_shows_its_sessions_summary_and_nothing_added_later(client, world):
    tech2 = factories.technician(world.tenant)
    db = factories.endpoint(world.group, hostname="acme-db01").endpoint
    session2 = factories.support_session(db, opened_by=tech2, reason="DB check")
    run_with_output(session2, actor=tech2, text="connections: 512 (max 512)\n")
    with world.bind():
        incident = incidents.incident_create(
            actor=world.tech, tenant_id=world.tenant.pk, title="ERP outage", client_group=world.group
        )
        incidents.incident_add_session(actor=world.tech, incident=incident, session=world.session)
        incidents.incident_add_session(actor=world.tech, incident=incident, session=session2)
        incidents.incident_write_summary(actor=world.tech, incident=incident, summary="DB connection pool exhausted.")
        review.session_redact_fragment(actor=world.tech, session=world.session, text_fragment=SECRET)
        factories.mark_reviewed(world.tech, world.session, session2)
        link, token = sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))
    assert set(link.reviewed_upto) == {str(world.session.pk), str(session2.pk)}
    late = factories.support_session(factories.endpoint(world.group, hostname="acme-late99").endpoint, opened_by=tech2)
    with world.bind():
        incidents.incident_add_session(actor=world.tech, incident=incident, session=late)
    html = client.get(reverse("share_view", args=[token])).content.decode()
    assert "ERP outage" in html and "DB connection pool exhausted." in html and "Acme Client" in html
    assert "acme-app01" in html and "acme-db01" in html and "connections: 512 (max 512)" in html
    assert "acme-late99" not in html and SECRET not in html
    assert world.tech.username in html and tech2.username in html
    text = pdf_text(client.get(reverse("share_pdf", args=[token])).content)
    assert "DB connection pool exhausted." in text and "acme-db01" in text and SECRET not in text


def test_an_incident_spanning_several_clients_cannot_be_shared(world):
    other_group = factories.client_group(world.tenant, name="Other Client")
    other = factories.support_session(factories.endpoint(other_group).endpoint, opened_by=world.tech)
    with world.bind():
        incident = incidents.incident_create(actor=world.tech, tenant_id=world.tenant.pk, title="Internal")
        incidents.incident_add_session(actor=world.tech, incident=incident, session=world.session)
        incidents.incident_add_session(actor=world.tech, incident=incident, session=other)
        with pytest.raises(review.ReviewError, match="several clients"):
            sharing.share_link_create(actor=world.tech, incident=incident, expires_in=timedelta(days=1))
    assert not ShareLink.all_tenants.exists()


def test_link_expiry_is_bounded_and_shown_once(client, world):
    with world.bind(), pytest.raises(review.ReviewError):
        sharing.share_link_create(actor=world.tech, session=world.session, expires_in=timedelta(days=365))
    factories.mark_reviewed(world.tech, world.session)
    client.force_login(world.tech)
    response = client.post(
        reverse("console:session_share", args=[world.session.pk]), {"expires_days": "3", "label": "Dana"}
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    link = ShareLink.all_tenants.get(session=world.session)
    token = re.search(r"/share/(shr_[A-Za-z0-9_-]+)/", response.content.decode()).group(1)
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest() and link.label == "Dana"
    assert timedelta(days=2.9) < link.expires_at - timezone.now() < timedelta(days=3.1)
    # The review page lists the link but never shows its token again.
    page = client.get(reverse("console:session_review", args=[world.session.pk])).content.decode()
    assert "Dana" in page and token not in page
    response = client.post(
        reverse("console:session_share", args=[world.session.pk]), {"expires_days": "400"}, follow=True
    )
    assert "Not shared" in response.content.decode() and ShareLink.all_tenants.count() == 1


def test_the_shared_page_is_plain_printable_and_private(client, world):
    _, token = world.link()
    response = client.get(reverse("share_view", args=[token]))
    html = response.content.decode()
    assert 'href="/static/console/share.css"' in html and "console.css" not in html
    assert "Log out" not in html and 'aria-label="Main"' not in html  # no console chrome
    assert reverse("share_pdf", args=[token]) in html and "Download PDF" in html
    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "same-origin"
    assert '<meta name="robots" content="noindex, nofollow">' in html
    from django.contrib.staticfiles import finders

    css = open(finders.find("console/share.css")).read()
    assert "@media print" in css


# --- tenant isolation ----------------------------------------------------------------------------------


def test_another_tenant_cannot_reach_review_links_or_exports(client, world):
    link, token = world.link()
    output = world.entry("action.output")
    other = factories.technician(factories.tenant("Other MSP"))
    client.force_login(other)
    before = TranscriptEntry.all_tenants.filter(session=world.session).count()
    s = world.session.pk
    for url in [
        reverse("console:session_review", args=[s]),
        reverse("console:session_export", args=[s]),
        reverse("console:session_preview", args=[s]),
        reverse("console:share_link_export", args=[link.pk]),
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert SECRET not in response.content.decode() and world.endpoint.hostname not in response.content.decode()
    for url, body in [
        (reverse("console:review_redact", args=[s]), {"entry": str(output.index), "whole": "1"}),
        (reverse("console:review_note", args=[s]), {"text": "x"}),
        (reverse("console:session_share", args=[s]), {"expires_days": "1"}),
        (reverse("console:share_link_revoke", args=[link.pk]), {}),
    ]:
        assert client.post(url, body).status_code == 404, url
    link.refresh_from_db()
    assert link.revoked_at is None and ShareLink.all_tenants.count() == 1
    assert TranscriptEntry.all_tenants.filter(session=world.session).count() == before
    # Services refuse a foreign actor even when handed the object.
    with tenancy.bind(other.membership.tenant_id):
        with pytest.raises(Forbidden):
            review.entry_redact(actor=other, session=world.session, entry=output)
        with pytest.raises(Forbidden):
            sharing.share_link_revoke(actor=other, link=link)
    # The link itself still works for the client.
    assert client.get(reverse("share_view", args=[token])).status_code == 200
