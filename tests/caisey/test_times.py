"""Times as people read them (caisey/templatetags/times.py): relative text, the absolute
date-time with its zone on hover, in the zone active for the request."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.utils import timezone

from caisey.templatetags.times import absolute_text, relative_text

NOW = datetime(2026, 12, 5, 5, 26, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (timedelta(seconds=-2), "just now"),
        (timedelta(seconds=3), "just now"),
        (timedelta(seconds=-42), "42 s ago"),
        (timedelta(seconds=-59.9), "59 s ago"),
        (timedelta(minutes=-3, seconds=-20), "3 min ago"),
        (timedelta(hours=-5, minutes=-59), "5 h ago"),
        (timedelta(days=-2, hours=-3), "2 d ago"),
        (timedelta(seconds=50), "in 50 s"),
        (timedelta(minutes=12), "in 12 min"),
        (timedelta(hours=2, minutes=1), "in 2 h"),
        (timedelta(days=3), "in 3 d"),
    ],
)
def test_relative_text_past_and_future(offset, text):
    assert relative_text(NOW + offset, NOW) == text


def test_beyond_a_month_it_gives_the_date_in_the_active_zone():
    with timezone.override(zoneinfo.ZoneInfo("Pacific/Auckland")):
        assert relative_text(datetime(2026, 10, 1, 20, 0, tzinfo=UTC), NOW) == "on 2026-10-02"


def test_the_absolute_time_names_the_zone():
    with timezone.override(zoneinfo.ZoneInfo("Europe/Paris")):
        assert absolute_text(NOW) == "2026-12-05 06:26:10 CET (Europe/Paris)"
    with timezone.override(zoneinfo.ZoneInfo("America/New_York")):
        assert absolute_text(NOW) == "2026-12-05 00:26:10 EST (America/New_York)"
    with timezone.override(zoneinfo.ZoneInfo("UTC")):
        assert absolute_text(NOW) == "2026-12-05 05:26:10 UTC"


def render(source: str, **context) -> str:
    return Template("{% load times %}" + source).render(Context(context))


def test_the_filter_renders_a_time_element_with_the_absolute_time_on_hover():
    at = timezone.now() - timedelta(minutes=3, seconds=5)
    with timezone.override(zoneinfo.ZoneInfo("Asia/Tokyo")):
        html = render("{{ at|relative }}", at=at)
        local = timezone.localtime(at)
    assert html == (
        f'<time datetime="{at.isoformat()}" title="{local:%Y-%m-%d %H:%M:%S} JST (Asia/Tokyo)" '
        "data-relative>3 min ago</time>"
    )


def test_the_filter_names_the_field_live_events_fill_and_says_never_for_no_time():
    at = timezone.now() + timedelta(hours=2, minutes=30)
    html = render('{{ at|relative:"last_seen" }}', at=at)
    assert html.startswith('<time data-field="last_seen" datetime="') and ">in 2 h</time>" in html
    assert render('{{ at|relative:"last_seen" }}', at=None) == '<time data-field="last_seen">never</time>'
    assert render("{{ at|relative }}", at=None) == "never"
    assert render("{{ at|relative }}", at="<b>not a time</b>") == "never"  # nothing of it is echoed
