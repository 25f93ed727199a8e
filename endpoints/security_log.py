"""A tenant's security log: sign-ins and their failures, lockouts, second-factor changes, single
sign-on links, API tokens issued and revoked, members invited and deactivated, policy changes,
endpoints re-enrolled. ``security_event_record`` is the one write; the receivers below turn
Django's, allauth's and allauth.mfa's signals into events; the services that change tokens,
members and policies call it in their own transaction. Tenant admins read it on the console's
security log page (``security_events_list``).

A failed sign-in with a username nobody has belongs to no tenant: it is recorded without one
(``tenant`` empty), with the name that was tried, so the server's operators see a guessing
attack in the Django admin; no tenant admin ever sees it (the scoped manager shows only their
tenant's rows), because the name might be another tenant's person mistyped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from allauth.core.internal.ratelimit import parse_rates
from allauth.mfa.signals import authentication_failed, authenticator_added, authenticator_removed, authenticator_reset
from allauth.socialaccount.signals import social_account_added
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from caisey import tenancy
from caisey.actors import Actor, Party, actor_label
from caisey.audit_hooks import AuditEvent, audit_emit
from endpoints.models import Membership, SecurityEvent, SecurityEventKind

User = get_user_model()

ANONYMOUS = "anonymous"  # the actor of a failed sign-in: nobody is signed in yet


def security_event_record(
    *,
    tenant_id: uuid.UUID | str | None,
    kind: SecurityEventKind,
    actor: Actor | None,
    person=None,
    address: str | None = None,
    target: str = "",
    detail: dict | None = None,
) -> SecurityEvent:
    """Write one security event of ``tenant_id`` (None only for a sign-in failure nobody can be
    found for). ``actor`` is a person, a system party, or None for an unauthenticated client.
    Called inside the caller's transaction: the event commits or rolls back with the change."""
    label = ANONYMOUS if actor is None else actor_label(actor)
    user = None if actor is None or isinstance(actor, Party) else actor
    event = SecurityEvent(
        tenant_id=tenant_id,
        kind=kind,
        actor=user,
        actor_label=label[:200],
        person=person,
        address=address or None,
        target=target[:300],
        detail=detail or {},
    )
    # A tenant-less row is nobody's tenant's: written as the named cross-tenant case. The audit
    # journal's row (caisey/audit_hooks.py) commits with the event: one atomic block (a savepoint
    # inside the caller's transaction; its own transaction for the sign-in signals, which run in
    # autocommit).
    with transaction.atomic(), tenancy.system() if tenant_id is None else tenancy.bind(tenant_id):
        event.save()
        if tenant_id is not None:  # a tenant-less event is no tenant's stream
            audit_emit([security_audit_event(event)])
    return event


# Security events' audit ids are derived from their row ids (uuid5), so the id is stable and
# recomputable from the security log itself.
SECURITY_EVENT_NAMESPACE = uuid.UUID("7f0c6c8e-2b1e-4d55-9a57-6a8f0f6d4b21")


def security_audit_event(event: SecurityEvent) -> AuditEvent:
    """The event as the audit stream tells it."""
    return AuditEvent(
        tenant_id=uuid.UUID(str(event.tenant_id)),
        category="security",
        kind=str(event.kind),
        at=event.at,
        actor=event.actor_label,
        event_id=uuid.uuid5(SECURITY_EVENT_NAMESPACE, f"security-event:{event.pk}"),
        data={
            "person": event.person.get_username() if event.person_id and event.person else None,
            "address": event.address,
            "target": event.target,
            "detail": event.detail,
        },
    )


def request_address(request) -> str | None:
    """The client's address (REMOTE_ADDR is the client's also behind a trusted proxy: caisey/proxies.py)."""
    return getattr(request, "META", {}).get("REMOTE_ADDR") or None


def _tenant_of(user) -> uuid.UUID | None:
    if user is None or getattr(user, "pk", None) is None:
        return None
    with tenancy.system():  # whose tenant the person is in: found across tenants, by the person
        return Membership.objects.filter(user_id=user.pk).values_list("tenant_id", flat=True).first()


def _record_for_person(kind: SecurityEventKind, *, user, actor: Actor | None, request, **fields) -> None:
    tenant_id = _tenant_of(user)
    if tenant_id is None:
        return  # a superuser without a membership, the server's operator: no tenant's log
    security_event_record(
        tenant_id=tenant_id, kind=kind, actor=actor, person=user, address=request_address(request), **fields
    )


# --- signal receivers --------------------------------------------------------------------------------


@receiver(user_logged_in, dispatch_uid="security_log_login")
def _on_login(sender, request, user, **kwargs) -> None:
    # A single sign-on: which provider, and how it checked the person (amr; whether that is more
    # than a password). Read before or after endpoints.identity binds the note: the same answer.
    from endpoints.access import idp_note_for_sign_in

    note = idp_note_for_sign_in(getattr(request, "session", None), user=user, now=timezone.now().timestamp())
    detail = {"sso": note["provider"], "amr": note["amr"], "idp_mfa": note["mfa"]} if note else None
    _record_for_person(SecurityEventKind.LOGIN, user=user, actor=user, request=request, detail=detail)


@receiver(user_logged_out, dispatch_uid="security_log_logout")
def _on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        _record_for_person(SecurityEventKind.LOGOUT, user=user, actor=user, request=request)


def lockout_rate() -> tuple[int, float] | None:
    """allauth's per-account limit on failed sign-ins (ACCOUNT_RATE_LIMITS "login_failed", the
    ``/key`` rate): how many failures in how many seconds lock the account."""
    for rate in parse_rates(settings.ACCOUNT_RATE_LIMITS.get("login_failed")):
        if rate.per == "key":
            return rate.amount, rate.duration
    return None


@receiver(user_login_failed, dispatch_uid="security_log_login_failed")
def _on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    name = str(credentials.get(User.USERNAME_FIELD) or credentials.get("username") or "")[:150]
    user = User._default_manager.filter(**{f"{User.USERNAME_FIELD}__iexact": name}).first() if name else None
    tenant_id = _tenant_of(user)
    address = request_address(request)
    if tenant_id is None:
        if user is None:  # nobody by that name: the operators' tenant-less record (module docstring)
            security_event_record(
                tenant_id=None,
                kind=SecurityEventKind.LOGIN_FAILED,
                actor=None,
                address=address,
                target=f"unknown user {name!r}",
            )
        return
    security_event_record(
        tenant_id=tenant_id, kind=SecurityEventKind.LOGIN_FAILED, actor=None, person=user, address=address
    )
    # allauth refuses the account once the failures reach its per-account rate; it sends no signal
    # for that, so the failure that reaches the limit records the lockout.
    rate = lockout_rate()
    if rate is None:
        return
    amount, window = rate
    since = timezone.now() - timedelta(seconds=window)
    with tenancy.bind(tenant_id):
        # Wrong passwords only: allauth's rate counts no wrong second-factor codes (detail "step").
        failures = (
            SecurityEvent.objects.filter(kind=SecurityEventKind.LOGIN_FAILED, person=user, at__gte=since)
            .exclude(detail__has_key="step")
            .count()
        )
        locked = SecurityEvent.objects.filter(kind=SecurityEventKind.LOCKOUT, person=user, at__gte=since).exists()
    if failures >= amount and not locked:
        security_event_record(
            tenant_id=tenant_id,
            kind=SecurityEventKind.LOCKOUT,
            actor=Party.SYSTEM,
            person=user,
            address=address,
            detail={"failures": failures, "window_s": window},
        )


@receiver(authentication_failed, dispatch_uid="security_log_factor_failed")
def _on_factor_failed(sender, request, user, authenticator=None, **kwargs) -> None:
    _record_for_person(
        SecurityEventKind.LOGIN_FAILED,
        user=user,
        actor=None,
        request=request,
        detail={"step": "second factor", "type": getattr(authenticator, "type", "")},
    )


def _factor_receiver(kind: SecurityEventKind):
    def record(sender, request, user, authenticator=None, **kwargs) -> None:
        _record_for_person(
            kind, user=user, actor=user, request=request, detail={"type": getattr(authenticator, "type", "")}
        )

    return record


_on_factor_added = _factor_receiver(SecurityEventKind.FACTOR_ADDED)
_on_factor_removed = _factor_receiver(SecurityEventKind.FACTOR_REMOVED)
_on_factor_reset = _factor_receiver(SecurityEventKind.FACTOR_RESET)
authenticator_added.connect(_on_factor_added, dispatch_uid="security_log_factor_added")
authenticator_removed.connect(_on_factor_removed, dispatch_uid="security_log_factor_removed")
authenticator_reset.connect(_on_factor_reset, dispatch_uid="security_log_factor_reset")


@receiver(social_account_added, dispatch_uid="security_log_sso_linked")
def _on_social_account_added(sender, request, sociallogin, **kwargs) -> None:
    user = sociallogin.user
    _record_for_person(
        SecurityEventKind.SSO_LINKED, user=user, actor=user, request=request, target=sociallogin.account.provider
    )


# --- retention ---------------------------------------------------------------------------------------

# Rows deleted per statement: one prune after a long pause does not hold a long lock.
PRUNE_BATCH = 5000


def security_events_prune(*, now: datetime | None = None) -> int:
    """Delete the events older than CAISEY_SECURITY_LOG_DAYS; returns how many. A sweep of every
    tenant's log (and the tenant-less rows) by age alone: ``tenancy.system()``, no row is read."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CAISEY["SECURITY_LOG_DAYS"])
    deleted = 0
    with tenancy.system():
        while True:
            ids = list(SecurityEvent.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:PRUNE_BATCH])
            if not ids:
                return deleted
            deleted += SecurityEvent.objects.filter(pk__in=ids).delete()[0]


# --- reading -----------------------------------------------------------------------------------------

PAGE_SIZE = 50


@dataclass(frozen=True)
class SecurityEventFilter:
    kind: str = ""
    person_id: int | None = None
    since: date | None = None
    until: date | None = None  # inclusive: the whole day


EXPORT_COLUMNS = ["at", "kind", "actor", "person", "address", "target", "detail"]


def security_events_export(*, tenant_id: uuid.UUID, filters: SecurityEventFilter) -> list[list[str]]:
    """Every event of ``tenant_id`` the filters match, newest first, as rows of ``EXPORT_COLUMNS``
    (for the console's CSV download)."""
    with tenancy.bind(tenant_id):
        events = _filtered(SecurityEvent.objects.select_related("person"), filters)
        return [
            [
                e.at.isoformat(),
                e.kind,
                e.actor_label,
                e.person.get_username() if e.person else "",
                e.address or "",
                e.target,
                json.dumps(e.detail, sort_keys=True),
            ]
            for e in events.iterator(chunk_size=2000)
        ]


def _filtered(events, filters: SecurityEventFilter):
    if filters.kind:
        events = events.filter(kind=filters.kind)
    if filters.person_id is not None:
        events = events.filter(Q(actor_id=filters.person_id) | Q(person_id=filters.person_id))
    zone = timezone.get_current_timezone()
    if filters.since is not None:
        events = events.filter(at__gte=datetime.combine(filters.since, time.min, tzinfo=zone))
    if filters.until is not None:
        events = events.filter(at__lt=datetime.combine(filters.until + timedelta(days=1), time.min, tzinfo=zone))
    return events


def security_events_list(*, tenant_id: uuid.UUID, filters: SecurityEventFilter, page: int = 1) -> Page:
    """One page of ``tenant_id``'s security log, newest first. ``person`` matches whoever did it
    or whom it concerned."""
    with tenancy.bind(tenant_id):
        events = _filtered(SecurityEvent.objects.select_related("actor", "person"), filters)
        result = Paginator(events, PAGE_SIZE).get_page(page)
        result.object_list = list(result.object_list)  # read while the tenant is bound
        return result
