"""Times as people read them on console pages: ``{{ value|relative }}`` renders
``<time datetime="ISO" title="2026-12-05 06:26:10 CET (Europe/Paris)" data-relative>3 min ago</time>``:
relative text, the absolute date-time with its zone on hover, in the zone active for the request
(the technician's: ``endpoints.middleware.TimeZoneMiddleware``). The ISO value is in UTC as
stored; what a person reads is in their zone. ``caisey/static/console/times.js``
applies the same rules in the browser, so live pages keep the text fresh; keep the two in step.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

# (limit in seconds, unit in seconds, unit's name): the first row whose limit is above the distance.
_UNITS = ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h"), (30 * 86400, 86400, "d"))


def relative_text(value: datetime, now: datetime | None = None) -> str:
    """ "just now", "42 s ago", "3 min ago", "in 2 h", "5 d ago"; a date beyond 30 days."""
    now = now or timezone.now()
    seconds = (value - now).total_seconds()
    distance = abs(seconds)
    if distance < 5:
        return "just now"
    for limit, unit, name in _UNITS:
        if distance < limit:
            n = int(distance // unit)  # floored: "59 s ago" until a whole minute has passed
            return f"in {n} {name}" if seconds > 0 else f"{n} {name} ago"
    return f"on {timezone.localtime(value):%Y-%m-%d}"


def absolute_text(value: datetime) -> str:
    """The full date-time in the active zone, with the zone's abbreviation and name."""
    local = timezone.localtime(value)
    zone = timezone.get_current_timezone_name()
    abbreviation = local.strftime("%Z")
    return f"{local:%Y-%m-%d %H:%M:%S} {abbreviation}" + (f" ({zone})" if zone != abbreviation else "")


@register.filter
def relative(value: datetime | None, field: str = "") -> str:
    """``{{ endpoint.last_seen_at|relative }}``; ``{{ value|relative:"last_seen" }}`` adds
    ``data-field="last_seen"`` (where live events fill the time in). No time: "never"."""
    if not isinstance(value, datetime):
        return format_html('<time data-field="{}">never</time>', field) if field else "never"
    if field:
        return format_html(
            '<time data-field="{}" datetime="{}" title="{}" data-relative>{}</time>',
            field,
            value.isoformat(),
            absolute_text(value),
            relative_text(value),
        )
    return format_html(
        '<time datetime="{}" title="{}" data-relative>{}</time>',
        value.isoformat(),
        absolute_text(value),
        relative_text(value),
    )


@register.filter
def absolute(value: datetime | None) -> str:
    """The hover text alone, for places that show a clock time (a transcript's rows)."""
    return absolute_text(value) if isinstance(value, datetime) else ""
