"""The public token-link mechanism (sessions_app/views/public.py) used by the share-link page and the
approval-link page: the same private headers, the rate limit keyed by address and token prefix, the
token resolved by its hash with the link's tenant bound (also when a user of another tenant is
signed in), and every visit logged in the page's own visit model."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from caisey import secrets, tenancy
from endpoints.models import Endpoint
from sessions_app.models import ApprovalLink, ApprovalLinkVisit, Prompt, PromptState, ShareLinkView
from sessions_app.services import actions as services
from sessions_app.services import approvals
from sessions_app.services import sessions as session_services
from sessions_app.views import public
from sessions_app.views.approval import APPROVAL_LINKS
from sessions_app.views.share import SHARE_LINKS
from tests import factories

pytestmark = pytest.mark.django_db


class World:
    """One tenant with a session that has a share link and a prompt escalated to an approver."""

    def __init__(self, on_commit) -> None:
        self.tenant = factories.tenant("Acme MSP")
        group = factories.client_group(self.tenant, name="Acme Client", approver_email="boss@client.example")
        # Escalation at once (these tests are about the links, not about when a prompt may escalate).
        factories.policy(group, requires="shell", escalate_after_percent=0)
        enrolled = factories.endpoint(group, hostname="acme-app01")
        Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(
            last_seen_at=timezone.now(), machine_context={"user_logged_in": True}
        )
        self.tech = factories.technician(self.tenant)
        with tenancy.bind(self.tenant.pk):
            self.session = session_services.session_open(actor=self.tech, endpoint=enrolled.endpoint, reason="T-1")
            action = services.action_request(
                actor=self.tech, session=self.session, kind="shell", params={"command": "ipconfig"}
            )
            self.prompt = Prompt.objects.get(action=action)
            with on_commit(execute=True):  # the e-mail goes out when the escalation commits
                approvals.prompt_escalate(actor=self.tech, prompt=self.prompt, base_url="http://testserver")
        self.share_link, self.share_token = factories.share_link(
            actor=self.tech, session=self.session, expires_in=timedelta(days=1)
        )
        self.approval_url = re.search(r"http://testserver(/approve/\S+/)", mail.outbox[-1].body).group(1)
        self.approval_token = self.approval_url.split("/")[2]
        self.share_url = reverse("share_view", args=[self.share_token])


@pytest.fixture
def world(django_capture_on_commit_callbacks):
    return World(django_capture_on_commit_callbacks)


def private_headers(response) -> dict[str, str]:
    return {name: response.get(name) for name in public.PRIVATE_HEADERS}


def test_both_pages_send_the_same_private_headers_on_answers_and_refusals(client, world):
    answers = {
        "share page": client.get(world.share_url),
        "share pdf": client.get(reverse("share_pdf", args=[world.share_token])),
        "share unknown": client.get("/share/shr_" + "A" * 43 + "/"),
        "approval page": client.get(world.approval_url),
        "approval unknown": client.get("/approve/apl_" + "A" * 43 + "/"),
        "approval bad decision": client.post(world.approval_url, {"decision": "maybe"}),
    }
    assert [a.status_code for a in answers.values()] == [200, 200, 404, 200, 404, 400]
    for name, response in answers.items():
        assert private_headers(response) == public.PRIVATE_HEADERS, name
    assert public.PRIVATE_HEADERS == {
        "Cache-Control": "no-store, private",
        "Referrer-Policy": "same-origin",  # not no-referrer: browsers then post the approval form with Origin: null
        "X-Robots-Tag": "noindex, nofollow",
        "X-Content-Type-Options": "nosniff",
    }
    # The pages' meta tags say the same.
    for response in (answers["share page"], answers["approval page"]):
        html = response.content.decode()
        assert '<meta name="referrer" content="same-origin">' in html
        assert '<meta name="robots" content="noindex, nofollow">' in html


def test_tokens_are_resolved_by_their_hash_with_the_one_helper(world):
    assert public.resolve(SHARE_LINKS, world.share_token) == world.share_link
    approval = public.resolve(APPROVAL_LINKS, world.approval_token)
    assert approval.token_hash == secrets.digest(world.approval_token) and approval.prompt_id == world.prompt.pk
    # Each page resolves only its own kind of token, and nothing malformed reaches the database.
    assert public.resolve(SHARE_LINKS, world.approval_token) is None
    assert public.resolve(APPROVAL_LINKS, world.share_token) is None
    for token in ("", "shr_short", "shr_" + "A" * 200, world.share_token[:-1] + "!"):
        assert public.resolve(SHARE_LINKS, token) is None


def test_the_rate_limit_is_keyed_by_address_and_token_prefix(client, world, settings):
    settings.CAISEY = {**settings.CAISEY, "RATE_LINK_PER_IP": (2, 60), "RATE_SHARE_PER_IP": (2, 60)}
    guess = "/approve/apl_gues{:039d}/"
    for i in range(2):
        assert client.get(guess.format(i), REMOTE_ADDR="192.0.2.1").status_code == 404
    limited = client.get(guess.format(7), REMOTE_ADDR="192.0.2.1")
    assert limited.status_code == 429 and "Too many attempts" in limited.content.decode()
    assert private_headers(limited) == public.PRIVATE_HEADERS
    # The guesser's prefix is spent at its address only: the real link opens there and elsewhere.
    assert client.get(world.approval_url, REMOTE_ADDR="192.0.2.1").status_code == 200
    assert client.get(guess.format(8), REMOTE_ADDR="192.0.2.2").status_code == 404
    # Share links count apart from approval links.
    assert client.get(world.share_url, REMOTE_ADDR="192.0.2.1").status_code == 200
    assert public.rate_key(SHARE_LINKS, "192.0.2.1", world.share_token) == f"192.0.2.1|{world.share_token[:8]}"


def test_guessing_across_prefixes_is_bounded_per_address(client, world, settings):
    settings.CAISEY = {**settings.CAISEY, "RATE_SHARE_PER_IP": (1, 60)}
    budget = public.ADDRESS_FACTOR  # per address, across every prefix
    for i in range(budget):
        assert client.get(f"/share/shr_{i:04d}{'A' * 39}/", REMOTE_ADDR="198.51.100.7").status_code == 404
    assert client.get(f"/share/shr_zzzz{'A' * 39}/", REMOTE_ADDR="198.51.100.7").status_code == 429
    assert client.get(world.share_url, REMOTE_ADDR="198.51.100.7").status_code == 429
    assert client.get(world.share_url, REMOTE_ADDR="198.51.100.8").status_code == 200


def test_a_signed_in_user_of_another_tenant_can_open_both_links(client, world):
    """The console middleware binds the visitor's own tenant; the page binds the link's tenant
    instead (system() then bind()), so nothing of either tenant leaks or fails."""
    other = factories.technician(factories.tenant("Rival MSP"))
    client.force_login(other)
    page = client.get(world.share_url, REMOTE_ADDR="203.0.113.5")
    assert page.status_code == 200 and "acme-app01" in page.content.decode()
    assert "Rival MSP" not in page.content.decode()
    approval = client.get(world.approval_url, REMOTE_ADDR="203.0.113.5")
    assert approval.status_code == 200 and "ipconfig" in approval.content.decode()
    done = client.post(world.approval_url, {"decision": "approve"}, REMOTE_ADDR="203.0.113.5")
    assert done.status_code == 200
    assert Prompt.all_tenants.get(pk=world.prompt.pk).state == PromptState.APPROVED
    # The visits are the link's tenant's rows.
    view = ShareLinkView.all_tenants.get(link=world.share_link)
    assert view.ip == "203.0.113.5" and view.link.tenant_id == world.tenant.pk


def test_every_visit_is_logged_in_the_pages_visit_model(client, world):
    client.get(world.share_url, REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Browser/1")
    client.get(reverse("share_pdf", args=[world.share_token]), REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Pdf/2")
    client.get(world.approval_url, REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Browser/1")
    assert list(ShareLinkView.all_tenants.order_by("at", "id").values_list("ip", "user_agent", "format")) == [
        ("203.0.113.9", "Browser/1", "page"),
        ("203.0.113.9", "Pdf/2", "pdf"),
    ]
    assert list(ApprovalLinkVisit.all_tenants.values_list("ip", "user_agent", "outcome")) == [
        ("203.0.113.9", "Browser/1", "viewed")
    ]
    # A used approval link is refused exactly as an unknown one (was: 410 against 404, which told a
    # guesser the token exists), and that visit is logged too; unknown tokens are not visits.
    ApprovalLink.all_tenants.update(used_at=timezone.now())
    used = client.get(world.approval_url)
    unknown = client.get("/approve/apl_" + "B" * 43 + "/")
    assert used.status_code == unknown.status_code == 404 and used.content == unknown.content
    client.get("/share/shr_" + "B" * 43 + "/")
    assert list(ApprovalLinkVisit.all_tenants.order_by("at", "id").values_list("outcome", flat=True)) == [
        "viewed",
        "refused",
    ]
    assert ShareLinkView.all_tenants.count() == 2
