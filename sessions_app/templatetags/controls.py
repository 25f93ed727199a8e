"""``visible``: control characters shown, not acted on, wherever a person reads what they approve.

Django escapes HTML but passes control characters through: an ESC or a bidirectional override in a
prompt reached the page (and whatever the text is copied into) raw."""

from __future__ import annotations

from django import template

from caisey_agent import protocol as p

register = template.Library()


@register.filter
def visible(value: object) -> str:
    return p.visible(str(value))
