"""Ticket references: what a session or incident may carry, and the tenant's link to its PSA.

A technician types the reference of the PSA ticket the work belongs to ("T20240101.0001",
"#48213"); a tenant admin may set a URL template containing ``{ticket}`` that turns it into a
link. The reference is substituted URL-encoded (every reserved character escaped), so a
reference can never add a path segment, a query parameter or a scheme to the link. Only
http and https templates are accepted: anything else (``javascript:``, ``data:``) would run in
the console's origin when clicked.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from caisey.errors import Rejected

#: A PSA ticket reference is short: ConnectWise and HaloPSA use integers, Autotask "T20240101.0001".
TICKET_MAX_LENGTH = 64
TEMPLATE_MAX_LENGTH = 500
PLACEHOLDER = "{ticket}"


class TicketRejected(Rejected):
    """A ticket reference or link template that cannot be stored; the message is for the person."""


def ticket_clean(value: str) -> str:
    """The reference as stored: stripped; empty means none. Printable characters only (no control
    or format characters, no line breaks), at most ``TICKET_MAX_LENGTH``."""
    value = (value or "").strip()
    if len(value) > TICKET_MAX_LENGTH:
        raise TicketRejected(f"a ticket reference is limited to {TICKET_MAX_LENGTH} characters")
    for ch in value:
        # Cc: control characters, Cf: format (bidi overrides, zero-width), Cs: lone surrogates,
        # Zl/Zp: line and paragraph separators. Spaces (Zs) inside a reference are fine.
        if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
            raise TicketRejected("a ticket reference must be printable text (no control characters)")
    return value


def template_clean(value: str) -> str:
    """A link template as stored: empty (no link), or an absolute http(s) URL containing ``{ticket}``."""
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > TEMPLATE_MAX_LENGTH:
        raise TicketRejected(f"a ticket link template is limited to {TEMPLATE_MAX_LENGTH} characters")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} or ch.isspace() for ch in value):
        raise TicketRejected("a ticket link template must not contain spaces or control characters")
    if PLACEHOLDER not in value:
        raise TicketRejected("a ticket link template must contain {ticket} where the reference goes")
    try:
        parts = urlsplit(value.replace(PLACEHOLDER, "0"))
    except ValueError:
        raise TicketRejected("a ticket link template must be a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TicketRejected("a ticket link template must be an http:// or https:// URL with a host")
    if PLACEHOLDER in urlsplit(value).netloc:
        raise TicketRejected("the ticket reference cannot go into the host name")
    return value


def ticket_url(template: str, ticket: str) -> str:
    """The link of ``ticket`` under ``template``; "" when either is empty."""
    if not template or not ticket:
        return ""
    return template.replace(PLACEHOLDER, quote(ticket, safe=""))


@dataclass(frozen=True)
class TicketPreset:
    key: str
    name: str
    template: str
    note: str


#: Templates of the three PSAs MSPs use most (docs/integrations.md, "Tickets"). Each names an
#: example host the admin replaces with their own instance's.
TICKET_PRESETS: tuple[TicketPreset, ...] = (
    TicketPreset(
        key="connectwise",
        name="ConnectWise Manage (PSA)",
        template="https://na.myconnectwise.net/v4_6_release/services/system_io/Service/"
        "fv_sr100_request.rdl?service_recid={ticket}",
        note="the ticket's number (service_recid); replace na.myconnectwise.net with your site "
        "(eu., au., or your own server)",
    ),
    TicketPreset(
        key="halopsa",
        name="HaloPSA",
        template="https://yourcompany.halopsa.com/ticket?id={ticket}",
        note="the ticket's number; replace yourcompany.halopsa.com with your Halo address",
    ),
    TicketPreset(
        key="autotask",
        name="Autotask (Datto)",
        template="https://ww5.autotask.net/Autotask/AutotaskExtend/ExecuteCommand.aspx"
        "?Code=OpenTicketDetail&TicketNumber={ticket}",
        note="the ticket number (T20240101.0001); replace ww5 with your zone (the ww# in your Autotask address)",
    ),
)
