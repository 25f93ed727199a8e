"""Ticket references and the tenant's ticket link template (endpoints/tickets.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from endpoints.tickets import TICKET_PRESETS, TicketRejected, template_clean, ticket_clean, ticket_url


@pytest.mark.parametrize(
    "value, stored",
    [
        ("  48213 ", "48213"),
        ("", ""),
        ("T20240101.0001", "T20240101.0001"),
        ("INC 2041/a", "INC 2041/a"),
        ("Ärger-7", "Ärger-7"),
        ("x" * 64, "x" * 64),
    ],
)
def test_a_reference_is_stored_stripped(value, stored):
    assert ticket_clean(value) == stored


@pytest.mark.parametrize(
    "value",
    ["x" * 65, "a\nb", "a\rb", "a\tb", "a\x00b", "a\x1bb", "a\u202eb", "a\u200bb", "a\u2028b", "a\x7fb", "a\ud800b"],
)
def test_a_reference_with_control_or_format_characters_or_too_long_is_refused(value):
    with pytest.raises(TicketRejected):
        ticket_clean(value)


@pytest.mark.parametrize(
    "template",
    [
        "javascript:alert(1)//{ticket}",
        "data:text/html,{ticket}",
        "ftp://psa.example/{ticket}",
        "//psa.example/{ticket}",
        "https://psa.example/ticket",  # no placeholder
        "https://{ticket}.psa.example/",  # the reference would choose the host
        "https:///{ticket}",  # no host
        "https://psa.example/ {ticket}",
        "https://psa.example/\n{ticket}",
        "https://psa.example/" + "a" * 500 + "{ticket}",
    ],
)
def test_only_http_and_https_templates_with_a_placeholder_are_accepted(template):
    with pytest.raises(TicketRejected):
        template_clean(template)


def test_an_empty_template_means_no_link():
    assert template_clean("  ") == ""
    assert ticket_url("", "48213") == "" and ticket_url("https://psa.example/{ticket}", "") == ""


def test_the_reference_is_url_encoded_and_cannot_change_the_links_shape():
    template = template_clean("https://psa.example/ticket?id={ticket}&view=full")
    url = ticket_url(template, "1&view=../../admin#x /?")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("https", "psa.example", "/ticket", "")
    assert parts.query == "id=1%26view%3D..%2F..%2Fadmin%23x%20%2F%3F&view=full"


@pytest.mark.parametrize("preset", TICKET_PRESETS, ids=lambda p: p.key)
def test_every_preset_is_a_valid_template(preset):
    assert template_clean(preset.template) == preset.template
    assert "4821" in ticket_url(preset.template, "4821")
    assert {p.key for p in TICKET_PRESETS} == {"connectwise", "halopsa", "autotask"}
