"""Template filters for the client's record: the formatters of sessions_app/formatting.py, so the
page and the PDF (which calls them directly) show the same figures."""

from __future__ import annotations

from datetime import datetime

from django import template

from sessions_app import formatting as fmt
from sessions_app.selectors.review import Field, ReviewedEntry
from sessions_app.selectors.story import sentence

register = template.Library()


@register.filter
def when(value: datetime | None) -> str:
    return fmt.when(value)


@register.filter
def clock(value: datetime | None) -> str:
    return fmt.clock(value)


@register.filter
def field_label(f: Field) -> str:
    return fmt.label(f.path)


@register.filter
def field_value(f: Field) -> str:
    """An unredacted field's value for people (the template renders redacted ones segment by segment)."""
    return f.text if f.block else fmt.value(f.path, f.text)


@register.filter
def entry_sentence(item: ReviewedEntry, names: dict[str, str] | None = None) -> str:
    """``{{ item|entry_sentence:story.names }}``: the entry's kind as a sentence naming its actor."""
    return sentence(item.entry.kind, fmt.who(item.entry.actor, names))


@register.filter
def who(actor: str, names: dict[str, str] | None = None) -> str:
    return fmt.who(actor, names)
