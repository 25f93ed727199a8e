"""The public token-link pages (share links, approval links): one mechanism for both.

A public link needs no account: its bearer token is the authorisation. Every page built on
``token_page`` does the same five things, in this order:

1. Rate limit. Each request counts against its client address *and* the token's first
   characters (``RATE_PREFIX_CHARS`` after the kind prefix), so a client guessing tokens from
   a shared address (an office NAT, a proxy) exhausts only the prefixes it guesses and does not
   lock out the holder of a real link there; a per-address budget ``ADDRESS_FACTOR`` times as
   large bounds guessing across prefixes.
2. Resolve the token by its hash (caisey/secrets.py, the one hashing helper). This lookup is
   the named cross-tenant step (``tenancy.system()``): the token is what names the tenant.
3. Bind the row's tenant for everything the page reads and writes
   (``with tenancy.system(), tenancy.bind(row.tenant_id)``), so a signed-in user of another
   tenant can open the link too and nothing of their own tenant leaks in.
4. Private headers, the same on every public page and on its refusals (``PRIVATE_HEADERS``).
   ``Referrer-Policy: same-origin``, not ``no-referrer``: under no-referrer browsers post a
   same-page form with ``Origin: null`` and Django's CSRF check refused every approval.
5. Log the visit, through the page's own visit model (``Visit.log``).

Unknown and malformed tokens get the page's plain refusal with 404; each page decides what an
expired, revoked or used link answers (share and approval: the same 404; approval visits are logged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from caisey import ratelimit, secrets, tenancy

PRIVATE_HEADERS = {
    "Cache-Control": "no-store, private",
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
TOKEN_MIN_LENGTH = 20
TOKEN_MAX_LENGTH = 100
#: Characters of the token's random part in the rate-limit key (64**4 buckets per kind and address).
RATE_PREFIX_CHARS = 4
#: The per-address budget, across every prefix, is this many times the per-prefix limit.
ADDRESS_FACTOR = 10


@dataclass(frozen=True)
class Visitor:
    ip: str
    user_agent: str


@dataclass(frozen=True)
class TokenLinks:
    """One kind of public link: its table, token prefix, rate setting, refusal page and visit log."""

    name: str  # the rate limit's scope, e.g. "share-link"
    model: type[models.Model]  # has ``token_hash`` and ``tenant``
    token_prefix: str  # "shr_", "apl_"
    rate: str  # key of settings.CAISEY holding (limit, window seconds) per address and prefix
    invalid_template: str  # the plain refusal page (context: ``rate_limited``)
    log: Callable[..., object]  # log(link=, ip=, user_agent=, outcome=): the page's visit model
    related: tuple[str, ...] = ()  # select_related of the lookup


@dataclass(frozen=True)
class Visit:
    """A request to a resolved link, inside its tenant: what the page's view receives."""

    links: TokenLinks
    request: HttpRequest
    link: Any
    token: str
    visitor: Visitor

    def log(self, outcome: str) -> None:
        self.links.log(link=self.link, ip=self.visitor.ip, user_agent=self.visitor.user_agent, outcome=outcome)

    def refuse(self, status: int) -> HttpResponse:
        return refuse(self.request, self.links, status)


def private(response: HttpResponse) -> HttpResponse:
    for name, value in PRIVATE_HEADERS.items():
        response[name] = value
    return response


def visitor_of(request: HttpRequest) -> Visitor:
    return Visitor(ip=request.META.get("REMOTE_ADDR") or "unknown", user_agent=request.META.get("HTTP_USER_AGENT", ""))


def refuse(request: HttpRequest, links: TokenLinks, status: int, *, rate_limited: bool = False) -> HttpResponse:
    """The plain refusal page: it never tells whether a link existed."""
    return private(render(request, links.invalid_template, {"rate_limited": rate_limited}, status=status))


def rate_key(links: TokenLinks, ip: str, token: str) -> str:
    return f"{ip}|{token[: len(links.token_prefix) + RATE_PREFIX_CHARS]}"


def allowed(links: TokenLinks, ip: str, token: str) -> bool:
    """Count this request; False when its address and token prefix, or its address, is over the limit."""
    limit, window = cast(tuple[int, int], settings.CAISEY[links.rate])
    per_prefix = ratelimit.hit(links.name, rate_key(links, ip, token), limit=limit, window=window)
    per_address = ratelimit.hit(f"{links.name}:address", ip, limit=limit * ADDRESS_FACTOR, window=window)
    return per_prefix and per_address


def resolve(links: TokenLinks, token: str) -> Any:
    """The row a token names, or None. Wrong, malformed and unknown tokens look the same."""
    if (
        not isinstance(token, str)
        or not token.startswith(links.token_prefix)
        or not TOKEN_MIN_LENGTH <= len(token) <= TOKEN_MAX_LENGTH
    ):
        return None
    with tenancy.system():  # cross-tenant by nature: the token is what names the tenant
        row = (
            links.model.objects.select_related(*links.related)  # type: ignore[attr-defined]
            .filter(token_hash=secrets.digest(token))
            .first()
        )
    if row is None or not secrets.matches(token, row.token_hash):
        return None
    return row


def token_page(links: TokenLinks) -> Callable[[Callable[[Visit], HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate ``view(visit) -> response`` into the page ``(request, token)``: rate limit, resolve,
    bind the link's tenant, private headers; the view logs the visit (``visit.log``)."""

    def decorate(view: Callable[[Visit], HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def page(request: HttpRequest, token: str) -> HttpResponse:
            visitor = visitor_of(request)
            if not allowed(links, visitor.ip, token):
                return refuse(request, links, 429, rate_limited=True)
            link = resolve(links, token)
            if link is None:
                return refuse(request, links, 404)
            # A public page: the link names the tenant (whoever is signed in, if anyone).
            with tenancy.system(), tenancy.bind(link.tenant_id):
                response = view(Visit(links=links, request=request, link=link, token=token, visitor=visitor))
            return private(response)

        return page

    return decorate
