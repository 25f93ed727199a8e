"""Tenant isolation, enumerated: every URL and every socket route, asked by a member of tenant A
for tenant B's objects.

The routes are discovered, not listed: a route that lands tomorrow is covered by this test the
day it lands, or the test fails and says what to add. These tables drive it:

- ``EXEMPT_ROUTES``: routes not covered here, each with its reason (and where it is tested).
- ``URL_PARAMETERS`` (and ``PK_BY_BASENAME`` for REST viewsets): what a URL parameter points at.
- ``SEARCHES`` and ``BODIES``: query strings and form bodies naming tenant B, sent to every page.
- ``SOCKET_CHECKS`` and ``CONSOLE_TOPICS``: the socket routes and console subscription topics.

Every request is made as a member of tenant A; tenant B's names and ids must never come back,
its objects must answer 404 (or 403), and none of tenant B's rows may change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils.regex_helper import normalize

from bridge import registry
from bridge.routing import websocket_urlpatterns
from caisey.asgi import application
from caisey.tenancy import TenantScopedManager
from caisey_agent import protocol as p
from endpoints.models import ClientGroup, Endpoint, EnrollmentToken, Membership, Role, Tenant
from tests import factories
from tests.bridge.agent_client import FakeAgent
from tests.bridge.test_console_consumer import ConsoleSocket, session_id_for

# --- two tenants -------------------------------------------------------------------------


@dataclass
class TenantWorld:
    """One tenant with one of everything; its names are distinctive so a leak is visible."""

    tenant: Tenant
    client_group: ClientGroup
    endpoint: Endpoint
    credential: str
    token: EnrollmentToken
    member: Membership
    session: Any  # sessions_app.models.SupportSession
    action: Any  # sessions_app.models.Action, in ``session``
    bulk_run: Any  # sessions_app.models.BulkRun
    prompt: Any  # sessions_app.models.Prompt, in ``session``
    incident: Any  # sessions_app.models.Incident, with ``session`` in it
    share_link: Any  # sessions_app.models.ShareLink, to ``session``
    follow_up: Any  # sessions_app.models.FollowUp, of ``session``, already due
    api_token: Any  # endpoints.models.ApiToken of ``member``
    runbook_version: Any  # sessions_app.models.RunbookVersion (version 1 of a runbook)
    audit_sink: Any  # audit.models.AuditSink (private destinations not allowed: a test send goes nowhere)
    webhook: Any  # integrations.models.WebhookEndpoint
    webhook_delivery: Any  # integrations.models.WebhookDelivery, to ``webhook``

    @property
    def secret_names(self) -> list[str]:
        """Strings that must never appear on another tenant's pages."""
        return [
            self.tenant.name,
            self.tenant.slug,
            self.client_group.name,
            self.client_group.slug,
            self.endpoint.hostname,
            self.endpoint.machine_id,
            self.token.prefix,
            self.member.user.username,
            self.session.reason,
            self.bulk_run.reason,
            self.prompt.title,
            self.incident.title,
            self.share_link.label,
            self.api_token.name,
            self.api_token.token.token_key,
            self.runbook_version.name,
            self.audit_sink.name,
            self.webhook.description,
            self.webhook.url,
        ]

    @property
    def secret_ids(self) -> list[str]:
        """Ids that must not appear on another tenant's pages unless the request itself carried them."""
        return [
            str(self.tenant.pk),
            str(self.client_group.pk),
            str(self.endpoint.pk),
            str(self.session.pk),
            str(self.action.pk),
            str(self.bulk_run.pk),
            str(self.prompt.pk),
            str(self.incident.pk),
            str(self.share_link.pk),
            str(self.runbook_version.runbook_id),
            str(self.webhook.pk),
            str(self.webhook_delivery.event_id),
        ]


def build_world(label: str) -> TenantWorld:
    tenant = factories.tenant(f"{label} Managed Services")
    group = factories.client_group(tenant, name=f"{label} Client Group", approver_email=f"it@{label.lower()}.test")
    enrolled = factories.endpoint(group, hostname=f"{label.lower()}-secret-host", tags=f"{label.lower()}tag")
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(
        machine_context={"hostname": f"{label.lower()}-secret-host", "os": f"{label}OS", "users": [f"{label}\\boss"]}
    )
    enrolled.endpoint.refresh_from_db()
    token, _ = factories.token(group, max_uses=5)
    member = factories.member(tenant, role=Role.TECHNICIAN)
    session = factories.support_session(enrolled.endpoint, opened_by=member.user, reason=f"{label} secret ticket")
    webhook, webhook_delivery = factories.webhook(
        tenant, url=f"https://1.1.1.1/{label.lower()}-secret-hook", description=f"{label} secret webhook"
    )
    return TenantWorld(
        tenant=tenant,
        client_group=group,
        endpoint=enrolled.endpoint,
        credential=enrolled.credential,
        token=token,
        member=member,
        session=session,
        action=factories.action(
            session, actor=member.user, kind="dns_resolve", params={"name": f"{label.lower()}-erp.local"}
        ),
        bulk_run=factories.bulk_run([enrolled.endpoint], actor=member.user, reason=f"{label} secret bulk run"),
        prompt=factories.prompt(session, actor=member.user, title=f"{label} secret prompt"),
        incident=factories.incident(tenant, actor=member.user, title=f"{label} secret incident", sessions=[session]),
        share_link=factories.share_link(actor=member.user, session=session, label=f"{label} secret share")[0],
        follow_up=factories.follow_up(session, actor=member.user, note=f"{label} secret follow-up", due=True),
        api_token=factories.api_token(member.user, name=f"{label} secret api token")[0],
        runbook_version=factories.runbook(tenant, actor=member.user, name=f"{label} secret runbook"),
        audit_sink=factories.audit_sink(tenant, name=f"{label} secret audit sink", allow_private=False),
        webhook=webhook,
        webhook_delivery=webhook_delivery,
    )


def snapshot(world: TenantWorld) -> dict[str, Any]:
    """Every tenant-owned row of a tenant (every model whose default manager is tenant-scoped)."""
    rows = {}
    for model in apps.get_models():
        manager = model._default_manager
        if isinstance(manager, TenantScopedManager):
            qs = model._base_manager.filter(**{manager.tenant_field: world.tenant.pk}).order_by("pk")
            rows[model._meta.label] = list(qs.values())
    assert {"endpoints.Endpoint", "sessions_app.Action", "bridge.OutboxMessage"} <= set(rows)
    return rows


# --- the tables ----------------------------------------------------------------------------

# Routes exempt from the enumeration, by URL name (namespace "admin" covers the whole admin).
# Everything else must be covered below.
EXEMPT_ROUTES: dict[str, str] = {
    # The Django admin scopes through the tenant-scoped managers; its changelists, forms and
    # object URLs for another tenant's rows are tested in tests/endpoints/test_console_pages.py.
    "admin": "Django admin (tests/endpoints/test_console_pages.py)",
    # Signing in and out shows no tenant data.
    "login": "login page",
    "logout": "logout",
    "sso_start": "single sign-on start (sends to a tenant's provider; tests/endpoints/test_sso.py)",
    # Liveness for load balancers: answers {"status": "ok"} and nothing else.
    "healthz": "health check",
    # Authenticated by the enrollment token, not the session; cross-tenant tokens and
    # identities are tested in tests/endpoints/test_enrollment.py.
    "agent-enroll": "agent enrollment API",
    # The client approver's one-time link: the 256-bit secret in the URL is the authorisation (the
    # approver has no account), so whoever holds it may use it by design; it is never shown to a
    # technician. Its single use and expiry are the prompts' own tests.
    "approval_link": "approval link (bearer secret)",
    # The client-facing transcript page behind a share link: likewise, the link's secret is the
    # authorisation, handed by the MSP to its client; expiry and revocation are sharing's own tests.
    "share_view": "share link page (bearer secret)",
    "share_pdf": "share link PDF (bearer secret)",
    # API schema and docs: they describe the API, not a tenant's data.
    "api-schema": "API schema",
    "schema": "API schema",
    "swagger-ui": "API docs",
    "redoc": "API docs",
}
EXEMPT_ROUTE_PREFIXES = ("static/",)  # static files, when served by Django in development
# django-allauth's pages (login stages, second factor, passkeys, recovery codes, re-authentication):
# each shows or changes only the signed-in person's own account; tests/endpoints/test_identity.py.
ACCOUNT_ROUTE_PREFIX = "accounts/"

# URL parameter name -> the object of a tenant the parameter points at. A new route with a new
# parameter name adds an entry here (and a factory in tests/factories.py if it needs one).
URL_PARAMETERS: dict[str, Callable[[TenantWorld], Any]] = {
    "endpoint_id": lambda w: w.endpoint.pk,
    "client_group_id": lambda w: w.client_group.pk,
    "group_id": lambda w: w.client_group.pk,
    "token_id": lambda w: w.token.pk,
    "tenant_id": lambda w: w.tenant.pk,
    "membership_id": lambda w: w.member.pk,
    "session_id": lambda w: w.session.pk,
    "action_id": lambda w: w.action.pk,  # an action of the session above
    "run_id": lambda w: w.bulk_run.pk,
    "prompt_id": lambda w: w.prompt.pk,  # a prompt of the session above
    "incident_id": lambda w: w.incident.pk,
    "link_id": lambda w: w.share_link.pk,  # a share link
    "follow_up_id": lambda w: w.follow_up.pk,  # a follow-up of the session above
    "api_token_id": lambda w: w.api_token.pk,  # a REST API token of the member
    "runbook_id": lambda w: w.runbook_version.runbook_id,
    "sink_id": lambda w: w.audit_sink.pk,  # an audit stream sink
    "webhook_id": lambda w: w.webhook.pk,  # a webhook destination (integrations)
    "delivery_id": lambda w: w.webhook_delivery.pk,  # a delivery to the webhook above
}

# REST routers name their id parameter "pk"; what it points at follows from the route's name,
# "<namespace>:<basename>-<action>" (e.g. "api:session-transcript"). A new viewset adds its basename.
PK_BY_BASENAME: dict[str, Callable[[TenantWorld], Any]] = {
    "endpoint": lambda w: w.endpoint.pk,
    "session": lambda w: w.session.pk,
    "action": lambda w: w.action.pk,
    "bulk-run": lambda w: w.bulk_run.pk,
    "prompt": lambda w: w.prompt.pk,
    "incident": lambda w: w.incident.pk,
    "share-link": lambda w: w.share_link.pk,
    "follow-up": lambda w: w.follow_up.pk,
    "client-group": lambda w: w.client_group.pk,
    "enrollment-token": lambda w: w.token.pk,
    # The console's routes of the same objects come first and confirm these getters: their last
    # route (delete) is the control request that removes tenant A's own object before the API's.
    "webhook": URL_PARAMETERS["webhook_id"],
    "audit-sink": URL_PARAMETERS["sink_id"],
}

# Query strings a list page is also asked with: searching for the other tenant by name.
SEARCHES: list[Callable[[TenantWorld], dict[str, str]]] = [
    lambda w: {"q": w.endpoint.hostname},
    lambda w: {"q": w.endpoint.tags},
    lambda w: {"q": w.client_group.name},
    lambda w: {"group": w.client_group.slug},
    lambda w: {"group": w.client_group.name},
    lambda w: {"endpoint": str(w.endpoint.pk), "client_group": str(w.client_group.pk)},
    lambda w: {"person": str(w.member.user_id), "kind": "login"},  # the security log's filters
]

# Form bodies a page without URL parameters is also POSTed: tenant B's ids in the fields forms use.
BODIES: list[Callable[[TenantWorld], dict[str, str]]] = [
    lambda w: {"endpoint": str(w.endpoint.pk), "kind": "system_summary", "reason": "x"},
    lambda w: {"group": w.client_group.slug, "kind": "system_summary"},
    lambda w: {"group": w.client_group.name, "kind": "system_summary"},
    lambda w: {
        "endpoint_id": str(w.endpoint.pk),
        "session": str(w.session.pk),
        "session_id": str(w.session.pk),
        "action": str(w.action.pk),
        "action_id": str(w.action.pk),
        "run_id": str(w.bulk_run.pk),
        "runbook": str(w.runbook_version.runbook_id),
        "version": "1",
        "client_group": str(w.client_group.pk),
        "tenant": str(w.tenant.pk),
    },
    # The REST API's shapes (JSON only): a bulk run over tenant B's endpoints or client group.
    lambda w: {"kind": "system_summary", "params": {}, "endpoints": [str(w.endpoint.pk)]},
    lambda w: {"kind": "system_summary", "params": {}, "client_group": w.client_group.slug},
]

NOT_REACHABLE = {403, 404}


# --- discovering the URL routes ------------------------------------------------------------


@dataclass
class Route:
    route: str  # as written in the urlconfs, e.g. "endpoints/<uuid:endpoint_id>/"
    name: str  # namespaced, e.g. "console:endpoint_detail"
    namespace: str
    url_format: str  # e.g. "endpoints/%(endpoint_id)s/"
    params: list[str]
    callback: Callable

    def getter(self, name: str) -> Callable[[TenantWorld], Any] | None:
        if name == "pk":
            basename = self.name.split(":")[-1]
            for key in sorted(PK_BY_BASENAME, key=len, reverse=True):
                if basename.startswith(key + "-"):
                    return PK_BY_BASENAME[key]
            return None
        return URL_PARAMETERS.get(name)

    def url(self, world: TenantWorld, others: dict[str, TenantWorld] | None = None) -> str:
        """The URL with every parameter pointing at ``world``'s object (or, per parameter, ``others``)."""
        others = others or {}
        return "/" + self.url_format % {name: self.getter(name)(others.get(name, world)) for name in self.params}

    def exempt_because(self) -> str | None:
        for key in (self.namespace.split(":")[0], self.name):  # a whole namespace, or one URL name
            if key and key in EXEMPT_ROUTES:
                return EXEMPT_ROUTES[key]
        if self.route.startswith(EXEMPT_ROUTE_PREFIXES):
            return "static files"
        if self.route.startswith(ACCOUNT_ROUTE_PREFIX):
            return "the signed-in person's own account (allauth)"
        return None

    def unknown_parameters(self) -> str | None:
        """Why this test cannot cover the route, or None."""
        unknown = [name for name in self.params if self.getter(name) is None]
        if not unknown:
            return None
        return (
            f"route {self.route!r} ({self.name or 'unnamed'}) has URL parameter(s) {unknown} this test does not "
            f"know: add them to URL_PARAMETERS in tests/test_tenant_isolation.py (parameter -> object of a "
            f"tenant; for a REST viewset's 'pk', its basename to PK_BY_BASENAME), or, if the route shows no "
            f"tenant data, add it to EXEMPT_ROUTES with the reason"
        )


def discover_routes(patterns=None, route_prefix: str = "", regex_prefix: str = "", namespace: str = "") -> list[Route]:
    found = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        regex = entry.pattern.regex.pattern.removeprefix("^")
        if isinstance(entry, URLResolver):
            ns = ":".join(filter(None, [namespace, entry.namespace]))
            found += discover_routes(entry.url_patterns, route_prefix + str(entry.pattern), regex_prefix + regex, ns)
        elif isinstance(entry, URLPattern):
            url_format, params = normalize("^" + regex_prefix + regex)[0]
            name = ":".join(filter(None, [namespace, entry.name or ""]))
            found.append(
                Route(route_prefix + str(entry.pattern), name, namespace, url_format, list(params), entry.callback)
            )
    return found


# --- the URL test ---------------------------------------------------------------------------------


@pytest.fixture
def two_tenants(db):
    return build_world("Alpha"), build_world("Bravo")


def assert_no_leak(response, other: TenantWorld, what: str, *, echoed: tuple[str, ...] = (), ids: bool = False) -> None:
    """Tenant B's names (and, with ``ids``, its object ids) are not in the response. Strings the
    request itself carried (``echoed``: a search box shows its query) do not count."""
    body = response.content.decode(errors="replace")
    for value in echoed:
        body = body.replace(value, "").replace(value.replace(" ", "+"), "")
    for secret in [*other.secret_names, *(other.secret_ids if ids else [])]:
        assert secret not in body, f"{what}: tenant B's {secret!r} appears in the response"
    assert response.status_code < 500, f"{what}: server error {response.status_code}"


def test_the_route_walker_finds_the_known_routes():
    routes = {r.name: r for r in discover_routes()}
    assert routes["console:endpoint_detail"].params == ["endpoint_id"]
    assert routes["console:endpoint_list"].params == []
    assert routes["console:endpoint_detail"].exempt_because() is None
    assert routes["agent-enroll"].exempt_because() and routes["login"].exempt_because()
    assert any(r.namespace == "admin" for r in routes.values())


def test_a_route_with_an_unknown_parameter_is_reported_not_skipped():
    """The day a route with a new kind of id lands, the enumeration fails and says what to add."""
    from django.urls import include, path

    def view(request, widget_id):  # pragma: no cover - never called
        raise AssertionError

    urls = [path("widgets/", include(([path("<int:widget_id>/", view, name="detail")], "widgets")))]
    (route,) = discover_routes(urls)
    assert (route.route, route.name, route.params) == ("widgets/<int:widget_id>/", "widgets:detail", ["widget_id"])
    assert route.exempt_because() is None
    problem = route.unknown_parameters()
    assert problem and "widget_id" in problem and "URL_PARAMETERS" in problem

    # A REST viewset's "pk" is known by the viewset's basename, and an unknown basename is reported.
    urls = [
        path(
            "api/",
            include(
                (
                    [
                        path("gadgets/<pk>/", view, name="gadget-detail"),
                        path("sessions/<pk>/", view, name="session-detail"),
                    ],
                    "api",
                )
            ),
        )
    ]
    gadget, session = discover_routes(urls)
    assert "PK_BY_BASENAME" in gadget.unknown_parameters()
    assert session.unknown_parameters() is None and session.getter("pk") is PK_BY_BASENAME["session"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TECHNICIAN, Role.ADMIN])
def test_every_url_keeps_tenant_b_out_of_reach_of_tenant_a(client, two_tenants, role):
    a, b = two_tenants
    client.force_login(factories.member(a.tenant, role=role).user)
    before = snapshot(b)

    covered, problems, unverified, verified = [], [], [], set()
    for route in discover_routes():
        if route.exempt_because():
            continue
        if route.unknown_parameters():
            problems.append(route.unknown_parameters())
            continue
        url_b = route.url(b)
        assert resolve(url_b).func == route.callback, f"{url_b} does not resolve back to {route.route}"
        if route.params:
            if check_object_route(client, route, a, b):
                verified |= {route.getter(name) for name in route.params}
            else:
                unverified.append(route)
        else:
            check_page_route(client, route, b)
        covered.append(route.route)

    # Every parameter mapping was shown right by at least one route that found tenant A's own
    # object. (A POST-only route may 404 on an empty form, e.g. "no such transcript entry".)
    for route in unverified:
        for name in route.params:
            if route.getter(name) not in verified:
                problems.append(
                    f"{route.route}: tenant A's own objects answer 404 and no other route confirms "
                    f"what parameter {name!r} points at; check URL_PARAMETERS / PK_BY_BASENAME"
                )
    assert not problems, "\n".join(problems)
    assert "endpoints/<uuid:endpoint_id>/" in covered and "" in covered
    assert {
        "members/tokens/",
        "members/tokens/<int:api_token_id>/revoke",
        "members/tokens/<int:api_token_id>/rotate",
        "members/sso/",
        "members/security-log/",
        "members/security-log.csv",
        "audit/",
        "audit/create",
        "audit/<int:sink_id>/enable",
        "audit/<int:sink_id>/disable",
        "audit/<int:sink_id>/test",
        "members/webhooks/",
        "members/webhooks/<uuid:webhook_id>/",
        "members/webhooks/<uuid:webhook_id>/deliveries/<int:delivery_id>/redeliver",
        "audit/<int:sink_id>/update",
        "audit/<int:sink_id>/delete",
        "api/v1/^webhooks/$",
        "api/v1/^webhooks/(?P<pk>[^/]+)/deliveries/$",
        "api/v1/^audit-sinks/(?P<pk>[^/]+)/$",
    } <= set(covered)
    assert snapshot(b) == before, "requests of tenant A changed tenant B's data"


def check_object_route(client, route: Route, a: TenantWorld, b: TenantWorld) -> bool:
    """Returns whether the control request (tenant A's own objects) was found."""
    # Control: the URL built from tenant A's own objects is found, so a 404 for B means
    # "not yours" and not "this test built a wrong URL". (403 is fine: a viewer may not act.)
    url_a = route.url(a)
    control = client.get(url_a)
    if control.status_code == 405:
        control = client.post(url_a)

    # Every parameter pointing at tenant B, and (for several parameters) each one alone: tenant
    # A's session with tenant B's action must be refused too.
    variants = [{name: b for name in route.params}]
    if len(route.params) > 1:
        variants += [{name: (b if name == foreign else a) for name in route.params} for foreign in route.params]
    for variant in variants:
        url = route.url(a, others=variant)
        foreign = [name for name, world in variant.items() if world is b]
        refused = []
        for method in ("get", "post", "put", "patch", "delete"):
            response = getattr(client, method)(url)
            what = f"{method.upper()} {url} ({route.route}) with tenant B's {foreign}"
            assert_no_leak(response, b, what)
            assert response.status_code in NOT_REACHABLE | {405}, (
                f"{what} answered {response.status_code}; expected 404 (or 403)"
            )
            if response.status_code in NOT_REACHABLE:
                refused.append(method)
        assert refused, f"{route.route}: no method was refused for tenant B's {foreign}"
    return control.status_code != 404


def check_page_route(client, route: Route, b: TenantWorld) -> None:
    url = "/" + route.url_format
    for method in ("get", "post"):
        assert_no_leak(getattr(client, method)(url), b, f"{method.upper()} {route.route}", ids=True)
    for search in SEARCHES:
        params = search(b)
        response = client.get(url, params)
        assert_no_leak(response, b, f"GET {route.route}?{params}", echoed=tuple(params.values()), ids=True)
    for body in BODIES:
        data = body(b)
        echoed = tuple(
            v for value in data.values() for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)
        )
        # As a console form would send it, and as an API client would.
        if all(isinstance(value, str) for value in data.values()):
            response = client.post(url, data, follow=True)
            assert_no_leak(response, b, f"POST {route.route} {data}", echoed=echoed, ids=True)
        response = client.post(url, data, content_type="application/json")
        assert_no_leak(response, b, f"POST {route.route} JSON {data}", echoed=echoed, ids=True)


def test_a_foreign_endpoint_id_gives_the_same_answer_as_a_nonexistent_one(client, two_tenants):
    """No id guessing: another tenant's id and a random id are indistinguishable."""
    a, b = two_tenants
    client.force_login(a.member.user)
    foreign = client.get(f"/endpoints/{b.endpoint.pk}/")
    missing = client.get("/endpoints/00000000-0000-4000-8000-000000000000/")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


# --- sockets ----------------------------------------------------------------------------------------

# Console subscription topic -> the object of a tenant to subscribe to. A domain app that
# registers a topic (bridge.registry.console_topic) adds its entry here.
CONSOLE_TOPICS: dict[str, Callable[[TenantWorld], Any]] = {
    "endpoint": lambda w: w.endpoint.pk,
    "session": lambda w: w.session.pk,
}


async def check_console_socket(path: str, a: TenantWorld, b: TenantWorld, a_session: str) -> None:
    console = await ConsoleSocket(a_session, path=path).open()
    topics = sorted(registry._topics)
    unknown = [t for t in topics if t not in CONSOLE_TOPICS]
    assert not unknown, (
        f"console topics {unknown} are not known to this test: add them to CONSOLE_TOPICS in "
        f"tests/test_tenant_isolation.py (topic -> object of a tenant)"
    )
    assert "endpoint" in topics
    for topic in topics:
        # Control: tenant A's own object can be subscribed to.
        own_id = str(CONSOLE_TOPICS[topic](a))
        assert await console.subscribe_to(topic, own_id) == {"subscribed": topic, "id": own_id}
        reply = await console.subscribe_to(topic, str(CONSOLE_TOPICS[topic](b)))
        assert reply.get("error") == "not_found", (
            f"console topic {topic!r}: subscribing to tenant B's object gave {reply}"
        )
        assert not any(secret in json.dumps(reply) for secret in b.secret_names)

    # Tenant B's live events never reach tenant A's page.
    agent_b = FakeAgent()
    await agent_b.connect()
    assert (await agent_b.hello(b.endpoint.pk, b.credential)).type == "welcome"
    await agent_b.recv()
    assert await console.silent_for(0.5), "tenant A's console received an event of tenant B"
    await agent_b.close()
    assert await console.silent_for(0.3)
    await console.close()


async def check_agent_socket(path: str, a: TenantWorld, b: TenantWorld, a_session: str) -> None:
    # Tenant A's endpoint credential does not open tenant B's endpoint.
    agent = FakeAgent(path)
    await agent.connect()
    reply = await agent.hello(b.endpoint.pk, a.credential, machine={"hostname": "hijacked"})
    assert reply.type == "error" and reply.body.code == "unauthenticated"
    assert await agent.expect_close() == p.CLOSE_UNAUTHENTICATED
    await agent.close()
    endpoint_b = await sync_to_async(Endpoint.all_tenants.get)(pk=b.endpoint.pk)
    assert endpoint_b.hostname == b.endpoint.hostname and endpoint_b.last_seen_at is None

    # Nor does a signed-in tenant A session (agents authenticate by credential only).
    agent = FakeAgent(path)
    agent.comm = WebsocketCommunicator(application, path, headers=[(b"cookie", f"sessionid={a_session}".encode())])
    await agent.connect()
    await agent.send_raw(text=p.encode(p.envelope(p.Heartbeat(interval=5))))
    assert (await agent.recv()).body.code == "not_authenticated"
    await agent.close()

    # Control: tenant A's own credential opens tenant A's endpoint.
    agent = FakeAgent(path)
    await agent.connect()
    assert (await agent.hello(a.endpoint.pk, a.credential)).type == "welcome"
    await agent.close()


# Socket route -> its isolation check. A new socket route must add its check here.
SOCKET_CHECKS = {
    "ws/agent/": check_agent_socket,
    "ws/console/": check_console_socket,
}


def discover_socket_routes(patterns=websocket_urlpatterns, prefix: str = "") -> list[str]:
    found = []
    for entry in patterns:
        inner = getattr(entry, "callback", None)
        if hasattr(inner, "routes"):  # a nested channels URLRouter
            found += discover_socket_routes(inner.routes, prefix + str(entry.pattern))
        else:
            found.append(prefix + str(entry.pattern))
    return found


@pytest.fixture
def fresh_channel_layer():
    """This test's own channel layer object (see tests/bridge/test_console_consumer.py)."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def two_tenants_live(transactional_db, fresh_channel_layer):
    a, b = build_world("Alpha"), build_world("Bravo")
    return a, b, session_id_for(a.member.user)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_every_socket_route_keeps_tenant_b_out_of_reach_of_tenant_a(two_tenants_live):
    a, b, a_session = two_tenants_live
    routes = discover_socket_routes()
    unknown = [r for r in routes if r not in SOCKET_CHECKS]
    assert not unknown, (
        f"socket routes {unknown} are not covered: add an isolation check for each to SOCKET_CHECKS "
        f"in tests/test_tenant_isolation.py"
    )
    assert set(routes) == set(SOCKET_CHECKS), (
        f"SOCKET_CHECKS lists routes that no longer exist: {set(SOCKET_CHECKS) - set(routes)}"
    )
    for route in routes:
        await SOCKET_CHECKS[route]("/" + route, a, b, a_session)
