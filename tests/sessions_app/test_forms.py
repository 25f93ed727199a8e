"""The console's forms and the API's serializers refuse alike: one constant per limit
(sessions_app/limits.py), enforced by the services too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import QueryDict

from caisey.errors import Rejected
from sessions_app import api, limits
from sessions_app.forms.sessions import MAX_EXPIRY_HOURS, ActionRunForm, BatchForm, FollowUpForm, NoteForm
from sessions_app.services import actions as action_services
from tests import factories

HOUR = 3600


def _post(**data) -> QueryDict:
    q = QueryDict(mutable=True)
    for key, value in data.items():
        q.setlist(key, value if isinstance(value, list) else [value])
    return q


def test_the_expiry_limit_is_thirty_days_for_console_and_api():
    assert limits.MAX_EXPIRY == timedelta(days=30)
    assert MAX_EXPIRY_HOURS * HOUR == api.MAX_EXPIRY_S == limits.MAX_EXPIRY.total_seconds()


@pytest.mark.parametrize(
    ("seconds", "accepted"),
    [(HOUR, True), (30 * 24 * HOUR, True), (30 * 24 * HOUR + HOUR, False), (0, False), (-HOUR, False)],
)
def test_console_and_api_agree_on_the_expiry(seconds, accepted):
    console = ActionRunForm(_post(kind="system_summary", expires_hours=str(seconds / HOUR)))
    assert console.is_valid() is accepted
    if not accepted:
        with pytest.raises(Rejected, match="between a minute and 30 days"):
            console.expires_in()
    body = api.ActionIn(data={"kind": "system_summary", "expires_in_seconds": seconds})
    assert body.is_valid() is accepted


def test_fourteen_days_no_longer_limits_the_console():
    """Deliberate change: the console's limit was 14 days, the API's 30; both are 30 now."""
    assert ActionRunForm(_post(kind="system_summary", expires_hours=str(20 * 24))).expires_in() == timedelta(days=20)


def test_a_non_numeric_expiry_is_refused_with_a_message():
    with pytest.raises(Rejected, match="number of hours"):
        ActionRunForm(_post(kind="system_summary", expires_hours="soon")).expires_in()


@pytest.mark.parametrize(("length", "accepted"), [(limits.NOTE_MAX_CHARS, True), (limits.NOTE_MAX_CHARS + 1, False)])
def test_console_and_api_agree_on_the_note_length(length, accepted):
    assert NoteForm(_post(text="x" * length)).is_valid() is accepted
    assert api.NoteIn(data={"text": "x" * length}).is_valid() is accepted


@pytest.mark.parametrize(("steps", "accepted"), [(limits.MAX_BATCH, True), (limits.MAX_BATCH + 1, False)])
def test_console_and_api_agree_on_the_batch_size(steps, accepted):
    lines = "\n".join(["system_summary"] * steps)
    assert BatchForm(_post(steps=lines)).is_valid() is accepted
    body = api.BatchIn(data={"actions": [{"kind": "system_summary"}] * steps})
    assert body.is_valid() is accepted


def test_a_malformed_batch_line_is_refused():
    with pytest.raises(Rejected, match="expected key=value"):
        BatchForm(_post(steps="dns_resolve erp.local")).items()


def test_a_follow_up_needs_a_date_and_time():
    with pytest.raises(Rejected, match="give a date and time"):
        FollowUpForm(_post(at="", note="later")).valid_data()
    assert FollowUpForm(_post(at="2030-01-02T09:30", note="later")).valid_data()["at"].tzinfo is not None


@pytest.mark.django_db
def test_the_service_enforces_the_same_expiry_limit():
    tenant = factories.tenant()
    endpoint = factories.endpoint(factories.client_group(tenant)).endpoint
    tech = factories.technician(tenant)
    session = factories.support_session(endpoint, opened_by=tech)
    with pytest.raises(Rejected, match="30 days"):
        action_services.action_request(
            actor=tech, session=session, kind="system_summary", params={}, expires_in=timedelta(days=31)
        )
    with pytest.raises(Rejected, match="at most 20"):
        action_services.batch_request(actor=tech, session=session, items=[("system_summary", {})] * 21)
