"""Prompt patterns per endpoint and per user: misses by hour, the first prompt of a session against
later ones, the median decision time; who the user is; what is left out; tenancy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from caisey import tenancy
from endpoints.models import Endpoint
from sessions_app.models import Prompt, PromptParty, PromptState
from sessions_app.selectors.patterns import UNKNOWN_USER, prompt_patterns
from sessions_app.services import sessions
from tests import factories

pytestmark = pytest.mark.django_db

NINE = (timezone.localtime() - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)


class World:
    def __init__(self) -> None:
        self.tenant = factories.tenant()
        self.group = factories.client_group(self.tenant)
        self.laptop = self.endpoint("lap01", ["ann"])
        self.tech = factories.technician(self.tenant)

    def endpoint(self, hostname: str, users: list[str]) -> Endpoint:
        endpoint = factories.endpoint(self.group, hostname=hostname).endpoint
        Endpoint.all_tenants.filter(pk=endpoint.pk).update(machine_context={"hostname": hostname, "users": users})
        endpoint.refresh_from_db()
        return endpoint

    def session(self, endpoint=None):
        return sessions.session_open(actor=self.tech, endpoint=endpoint or self.laptop)

    def prompt(self, session, *, state: str, at, decided_after_s: float | None = None, by: str = "", party=None):
        prompt = factories.prompt(session, actor=self.tech)
        Prompt.all_tenants.filter(pk=prompt.pk).update(
            state=state,
            created_at=at,
            decided_at=at + timedelta(seconds=decided_after_s) if decided_after_s is not None else None,
            decided_by=by,
            state_changed_by=party or (PromptParty.RUNTIME if decided_after_s is not None else PromptParty.SYSTEM),
        )
        return prompt

    def patterns(self, endpoint=None):
        endpoint = endpoint or self.laptop
        with tenancy.bind(self.tenant.pk):  # as the console request binds it
            return prompt_patterns(endpoint_id=endpoint.pk, client_group_id=self.group.pk)


@pytest.fixture
def world():
    return World()


def test_first_prompts_missed_later_ones_answered(world):
    for decided_after in (30, 90):
        s = world.session()
        world.prompt(s, state=PromptState.EXPIRED, at=NINE)
        world.prompt(
            s, state=PromptState.APPROVED, at=NINE + timedelta(hours=5), decided_after_s=decided_after, by="ann"
        )
    got = world.patterns()
    here = got["endpoint"]
    assert (here["asked"], here["answered"], here["missed"], here["miss_rate"]) == (4, 2, 2, 0.5)
    assert here["first_prompt"] == {"asked": 2, "missed": 2, "miss_rate": 1.0}
    assert here["later_prompts"] == {"asked": 2, "missed": 0, "miss_rate": 0.0}
    assert here["median_decision_s"] == 60.0
    assert here["missed_by_hour"][9] == 2 and sum(here["missed_by_hour"]) == 2
    assert here["asked_by_hour"][9] == 2 and here["asked_by_hour"][14] == 2
    # The missed prompts are the user's logged in at session open; the decisions name ann too.
    assert [u["user"] for u in got["users"]] == ["ann"]
    assert got["users"][0]["first_prompt"]["missed"] == 2 and got["days"] == 30


def test_a_user_is_followed_across_the_clients_endpoints_but_the_endpoint_only_counts_its_own(world):
    desk = world.endpoint("desk01", ["ann"])
    world.prompt(world.session(desk), state=PromptState.EXPIRED, at=NINE)
    world.prompt(world.session(), state=PromptState.DENIED, at=NINE, decided_after_s=10, by="ann")
    got = world.patterns()
    assert got["endpoint"]["asked"] == 1 and got["endpoint"]["missed"] == 0
    (ann,) = got["users"]
    assert (
        ann["asked"] == 2 and ann["missed"] == 1 and ann["first_prompt"] == {"asked": 2, "missed": 1, "miss_rate": 0.5}
    )


def test_who_the_user_is(world):
    shared = world.endpoint("rds01", ["bob", "ann"])
    nobody = world.endpoint("kiosk", [])
    world.prompt(world.session(shared), state=PromptState.EXPIRED, at=NINE)
    world.prompt(world.session(shared), state=PromptState.APPROVED, at=NINE, decided_after_s=5, by="CORP\\bob")
    world.prompt(world.session(nobody), state=PromptState.EXPIRED, at=NINE)
    assert [u["user"] for u in world.patterns(shared)["users"]] == ["CORP\\bob", "ann, bob"]
    assert [u["user"] for u in world.patterns(nobody)["users"]] == [UNKNOWN_USER]


def test_what_says_nothing_about_the_user_is_left_out(world):
    s = world.session()
    cancelled = world.prompt(
        s, state=PromptState.CANCELLED, at=NINE - timedelta(minutes=1)
    )  # the session's first prompt
    world.prompt(s, state=PromptState.EXPIRED, at=NINE + timedelta(minutes=5))
    world.prompt(
        s,
        state=PromptState.APPROVED,
        at=NINE,
        decided_after_s=20,
        by="approver:boss@client.example",
        party=PromptParty.APPROVER,
    )
    world.prompt(s, state=PromptState.PENDING, at=NINE)
    world.prompt(s, state=PromptState.FAILED_TO_DELIVER, at=NINE)
    got = world.patterns()
    assert cancelled.pk  # cancelled: not counted, but it was what the user saw first
    assert got["endpoint"]["asked"] == 2 and got["endpoint"]["first_prompt"]["asked"] == 0
    assert got["endpoint"]["later_prompts"] == {"asked": 2, "missed": 1, "miss_rate": 0.5}
    (ann,) = got["users"]  # the approver's decision is not ann's
    assert ann["asked"] == 1 and ann["missed"] == 1


def test_a_sessions_first_prompt_older_than_the_window_still_makes_the_recent_one_later(world):
    long_session = world.session()
    world.prompt(long_session, state=PromptState.APPROVED, at=NINE - timedelta(days=31), decided_after_s=5, by="ann")
    world.prompt(long_session, state=PromptState.EXPIRED, at=NINE)
    recent = world.patterns()["endpoint"]
    assert recent["asked"] == 1 and recent["first_prompt"]["asked"] == 0 and recent["later_prompts"]["missed"] == 1


def test_old_prompts_and_other_tenants_are_not_counted(world):
    world.prompt(world.session(), state=PromptState.EXPIRED, at=NINE - timedelta(days=40))
    other = World()
    other.prompt(other.session(), state=PromptState.EXPIRED, at=NINE)
    with tenancy.bind(world.tenant.pk):
        assert world.patterns()["endpoint"]["asked"] == 0
        assert prompt_patterns(endpoint_id=other.laptop.pk, client_group_id=other.group.pk)["endpoint"]["asked"] == 0


def test_session_page_and_api_show_the_patterns(client, world):
    s = world.session()
    world.prompt(s, state=PromptState.EXPIRED, at=NINE)
    world.prompt(s, state=PromptState.APPROVED, at=NINE + timedelta(minutes=1), decided_after_s=42, by="ann")
    client.force_login(world.tech)
    page = client.get(reverse("console:session_detail", args=[s.pk])).content.decode()
    assert 'id="prompt-patterns"' in page and 'data-user="ann"' in page
    assert "median decision 42 s" in page and "9h×1" in page
    assert 'first prompt of a session: missed <span data-field="first-missed">1 of 1</span>' in page
    api = APIClient()
    _, token = factories.api_token(world.tech)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    body = api.get(f"/api/v1/endpoints/{world.laptop.pk}/prompt-patterns/").json()
    assert body["endpoint"]["first_prompt"] == {"asked": 1, "missed": 1, "miss_rate": 1.0}
    assert body["endpoint"]["median_decision_s"] == 42.0 and body["users"][0]["user"] == "ann"
    stranger = World()
    assert api.get(f"/api/v1/endpoints/{stranger.laptop.pk}/prompt-patterns/").status_code == 404
