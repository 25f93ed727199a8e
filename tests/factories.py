"""Factories for tests: small functions over the real services, so tests build state the way
the product does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta

from caisey import secrets, tenancy
from caisey.actors import Party
from endpoints import services
from endpoints.api_tokens import api_token_issue
from endpoints.models import ApiToken, ClientGroup, Endpoint, EnrollmentToken, Membership, Role, Tenant

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery"


# Tenants, people, client groups and enrolled endpoints are set up as the operator's command and
# the enrolment endpoint would: across tenants, by name (tenancy.system()).


@tenancy.system()
def tenant(name: str | None = None, *, mfa_required: bool = False) -> Tenant:
    """A tenant; tests say whether it requires a second factor (new tenants do by default)."""
    n = next(_seq)
    name = name or f"MSP {n}"
    return services.tenant_create(
        name=name,
        slug=f"msp-{n}-{secrets.new_secret()[:6].lower()}",
        admin_username=f"admin{n}-{secrets.new_secret()[:6]}",
        admin_password=PASSWORD,
        mfa_required=mfa_required,
    )


def totp(user) -> str:
    """An authenticator app enrolled for ``user`` through allauth; its secret (for pyotp)."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


@tenancy.system()
def member(tenant: Tenant, role: str = Role.TECHNICIAN, username: str | None = None) -> Membership:
    return services.membership_create(
        tenant=tenant, username=username or f"user{next(_seq)}-{secrets.new_secret()[:6]}", password=PASSWORD, role=role
    )


@tenancy.system()
def client_group(tenant: Tenant, name: str | None = None, **kwargs) -> ClientGroup:
    n = next(_seq)
    return services.client_group_create(
        actor=Party.SYSTEM, tenant=tenant, name=name or f"Client {n}", slug=f"client-{n}", **kwargs
    )


@tenancy.system()
def token(
    group: ClientGroup, *, max_uses: int = 1, expires_in: timedelta = timedelta(hours=1)
) -> tuple[EnrollmentToken, str]:
    return services.enrollment_token_issue(
        actor=Party.SYSTEM, client_group=group, expires_in=expires_in, max_uses=max_uses
    )


@dataclass
class EnrolledEndpoint:
    endpoint: Endpoint
    credential: str


@tenancy.system()
def endpoint(group: ClientGroup, *, hostname: str | None = None, tags: str = "") -> EnrolledEndpoint:
    _, secret = token(group)
    n = next(_seq)
    result = services.endpoint_enroll(
        token_secret=secret, machine_id=f"machine-{n:04d}-{secrets.new_secret()[:8]}", hostname=hostname or f"host{n}"
    )
    if tags:
        Endpoint.all_tenants.filter(pk=result.endpoint.pk).update(tags=tags)
        result.endpoint.refresh_from_db()
    return EnrolledEndpoint(endpoint=result.endpoint, credential=result.credential)


def technician(tenant: Tenant):
    """A technician user with its membership loaded, as request.user would be."""
    user = member(tenant).user
    user.refresh_from_db()
    return user


def support_session(enrolled: Endpoint, *, opened_by=None, reason: str = "ticket 1234"):
    """An open support session on an endpoint, opened by a technician of its tenant."""
    from sessions_app.services import sessions as session_services

    actor = opened_by or member(enrolled.tenant, role=Role.TECHNICIAN).user
    return session_services.session_open(actor=actor, endpoint=enrolled, reason=reason)


def action(session, *, actor=None, kind: str = "system_summary", params: dict | None = None):
    """A queued action in a session (it waits in the outbox until the agent takes it)."""
    from sessions_app.services import actions as session_services

    actor = actor or session.opened_by
    return session_services.action_request(actor=actor, session=session, kind=kind, params=params or {})


def bulk_run(endpoints: list[Endpoint], *, actor=None, kind: str = "system_summary", reason: str = "bulk check"):
    """One diagnostic across endpoints of one tenant: a session and an action per endpoint."""
    from sessions_app.services import bulk as session_bulk

    actor = actor or member(endpoints[0].tenant, role=Role.TECHNICIAN).user
    return session_bulk.bulk_run_start(actor=actor, endpoints=endpoints, kind=kind, params={}, reason=reason)


def runbook(tenant: Tenant, *, actor=None, name: str = "ERP outage", steps: list | None = None):
    """A runbook of the tenant (its version 1): DNS, then a system summary unless ``steps``."""
    from sessions_app.services import runbooks

    actor = actor or member(tenant, role=Role.TECHNICIAN).user
    steps = steps or [{"kind": "dns_resolve", "params": {"name": "erp.acme.local"}}, {"kind": "system_summary"}]
    return runbooks.runbook_create(actor=actor, tenant_id=tenant.pk, name=name, steps=steps)


@tenancy.system()
def policy(
    group: ClientGroup,
    *,
    requires: str = "shell",
    deadline_s: int = 300,
    allow_escalation: bool = True,
    allow_without_user: bool = False,
    escalate_after_percent: int = 50,
):
    """Set the group's approval policy (client_group_create wrote the default one)."""
    from endpoints.models import ApprovalPolicy

    return ApprovalPolicy.all_tenants.update_or_create(
        client_group=group,
        defaults=dict(
            tenant_id=group.tenant_id,
            requires=requires,
            response_deadline_s=deadline_s,
            allow_escalation=allow_escalation,
            allow_without_user=allow_without_user,
            escalate_after_percent=escalate_after_percent,
        ),
    )[0]


def prompt(session, *, actor=None, title: str = "May we restart the print spooler?", allow_escalation: bool = True):
    """An approval prompt in a session, queued for the endpoint's user."""
    from django.db import transaction

    from caisey import tenancy
    from sessions_app.services import prompting

    with transaction.atomic(), tenancy.bind(session.tenant_id):  # as the requesting service would
        return prompting.prompt_issue(
            actor=actor or session.opened_by,
            session=session,
            title=title,
            detail="Printing is stuck.",
            deadline_s=600,
            allow_escalation=allow_escalation,
        )


def incident(tenant: Tenant, *, actor=None, title: str = "ERP outage", sessions=(), client_group=None):
    """An incident of a tenant grouping support sessions."""
    from sessions_app.services import incidents as session_incidents

    actor = actor or member(tenant, role=Role.TECHNICIAN).user
    created = session_incidents.incident_create(
        actor=actor, tenant_id=tenant.pk, title=title, client_group=client_group
    )
    for session in sessions:
        session_incidents.incident_add_session(actor=actor, incident=created, session=session)
    return created


def mark_reviewed(actor, *sessions) -> None:
    """The review step (review.completed) for each session whose record has no current review."""
    from caisey import tenancy
    from sessions_app.selectors.review import review_status
    from sessions_app.services import review

    for session in sessions:
        with tenancy.bind(session.tenant_id):
            if not review_status(session=session).current:
                review.record_review_complete(actor=actor, session=session)


def share_link(*, actor, session=None, incident=None, expires_in: timedelta = timedelta(days=1), label: str = ""):
    """A share link to a session's or an incident's reviewed record (reviewed first); returns (link, token)."""
    from caisey import tenancy
    from sessions_app.selectors.incidents import incident_sessions
    from sessions_app.services import sharing

    with tenancy.bind((session or incident).tenant_id):  # as in the console request that creates it
        mark_reviewed(actor, *([session] if session is not None else incident_sessions(incident=incident)))
        return sharing.share_link_create(
            actor=actor, session=session, incident=incident, expires_in=expires_in, label=label
        )


def follow_up(session, *, actor=None, note: str = "check the backup ran", due: bool = False):
    """A follow-up scheduled from a session (in an hour; or already due, as the reminder sweep finds it)."""
    from django.utils import timezone

    from sessions_app.models import FollowUp
    from sessions_app.services import followups

    at = timezone.now() + timedelta(hours=1)
    scheduled = followups.follow_up_schedule(actor=actor or session.opened_by, session=session, at=at, note=note)
    if due:
        FollowUp.all_tenants.filter(pk=scheduled.pk).update(due_at=timezone.now() - timedelta(minutes=1))
        scheduled.refresh_from_db()
    return scheduled


def api_token(user, *, scope: str | None = None, days: int = 30, name: str = "test") -> tuple[ApiToken, str]:
    """A REST API token of ``user``, issued as the command line does; (row, secret). Its scope:
    ``scope``, else what the person's role allows (operator for technicians and admins)."""
    membership = Membership.all_tenants.get(user=user)
    tenant_id = membership.tenant_id
    scope = scope or ("operator" if membership.can_operate else "read")
    issued = api_token_issue(
        actor=Party.OPERATOR, tenant_id=tenant_id, owner=user, name=name, scope=scope, days=days, step_up=None
    )
    return issued.token, issued.secret


def audit_sink(tenant: Tenant, *, actor=None, name: str | None = None, **fields):
    """An audit stream sink of ``tenant``, made by a tenant admin (syslog over plain TCP to 127.0.0.1
    unless ``fields`` say otherwise)."""
    from audit.services import SinkInput, audit_sink_create

    actor = actor or member(tenant, role=Role.ADMIN).user
    data = {"kind": "syslog_tcp", "host": "127.0.0.1", "port": 9, "tls": False, "allow_private": True} | fields
    return audit_sink_create(
        actor=actor, tenant_id=tenant.pk, data=SinkInput(name=name or f"sink {next(_seq)}", **data)
    )


def webhook(tenant: Tenant, *, url: str = "https://1.1.1.1/hook", description: str = "", events=("session.opened",)):
    """A webhook destination of ``tenant`` (created by a new admin of it) and one queued delivery to it."""
    from integrations import services as integration_services

    admin = member(tenant, role=Role.ADMIN).user
    issued = integration_services.webhook_create(
        actor=admin, tenant_id=tenant.pk, url=url, events=list(events), description=description
    )
    return issued.endpoint, integration_services.webhook_test_send(actor=admin, endpoint=issued.endpoint)
