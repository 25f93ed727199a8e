"""The write path for tenants, client groups, enrollment and endpoint identity, and the one
owner of an endpoint's mode, heartbeat interval and announced presence (the bridge calls
these; it writes none of those columns itself).

Tenancy: creating a tenant is system work (``tenancy.system()``, named here); services acting
for a person bind that person's tenant with ``endpoints.access.acting_for``; the agent's
enrollment and authentication find their tenant through a named cross-tenant lookup of the
token or endpoint, then act in that tenant; the connection records run in the endpoint's
tenant, bound by the bridge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django.utils.text import slugify

from caisey import actors, secrets, tenancy
from caisey.actors import Actor, Party
from caisey.errors import Forbidden, Rejected
from caisey.state_machine import transition
from endpoints.access import StepUp, acting_for, require_member, step_up_detail
from endpoints.hooks import endpoint_reenrolled_hooks, endpoint_revoked_hooks
from endpoints.models import (
    ENDPOINT_TRANSITIONS,
    AgentMode,
    ApprovalPolicy,
    ClientGroup,
    Endpoint,
    EndpointStatus,
    EnrollmentToken,
    Membership,
    Presence,
    Role,
    SecurityEventKind,
    Tenant,
)
from endpoints.security_log import security_event_record
from endpoints.selectors import DEFAULT_POLICY
from endpoints.tickets import template_clean

User = get_user_model()


# --- tenants and people -----------------------------------------------------------


@transaction.atomic
@transaction.atomic
def tenant_create(
    *,
    name: str,
    slug: str = "",
    admin_username: str,
    admin_email: str = "",
    admin_password: str,
    mfa_required: bool = True,
) -> Tenant:
    """A new tenant with its first admin (operators: the create_tenant command, the demo).
    New tenants require a second factor unless the operator says otherwise."""
    with tenancy.system():  # creating a tenant is system work: no tenant exists to bind yet
        tenant = Tenant.objects.create(name=name, slug=slug or slugify(name), mfa_required=mfa_required)
        membership_create(
            tenant=tenant, username=admin_username, email=admin_email, password=admin_password, role=Role.ADMIN
        )
    return tenant


@transaction.atomic
def membership_create(
    *, tenant: Tenant, username: str, password: str, email: str = "", role: str = Role.TECHNICIAN
) -> Membership:
    """A new person in ``tenant`` (operators' work; tenant admins use the Django admin).
    The password must pass the configured validators (AUTH_PASSWORD_VALIDATORS)."""
    password_check(password=password, user=User(username=username, email=email))
    # Tenant admins manage their own tenant in the Django admin, so they are staff.
    user = User.objects.create_user(username=username, email=email, password=password, is_staff=role == Role.ADMIN)
    if role == Role.ADMIN:
        _grant_admin_permissions(user)
    with tenancy.bind(tenant.pk):
        return Membership.objects.create(user=user, tenant=tenant, role=role)


def password_check(*, password: str, user) -> None:
    """Django's password validators; their messages in one ``Rejected``."""
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise Rejected("password not accepted: " + " ".join(exc.messages)) from None


def _grant_admin_permissions(user) -> None:
    from django.contrib.auth.models import Permission

    perms = Permission.objects.filter(
        content_type__app_label="endpoints",
        content_type__model__in=["clientgroup", "enrollmenttoken", "endpoint", "membership", "approvalpolicy"],
    )
    user.user_permissions.add(*perms)


@transaction.atomic
def tenant_share_review_set(*, actor: Actor, tenant_id: uuid.UUID | str, required: bool) -> Tenant:
    """Whether a share link needs a reviewed record (sessions_app/services/sharing.py): a tenant admin's choice."""
    membership = require_member(actor, tenant_id)
    if membership.role != Role.ADMIN:
        raise Forbidden("only a tenant admin can change whether a record must be reviewed before it is shared")
    with tenancy.bind(tenant_id):
        Tenant.objects.filter(pk=tenant_id).update(share_requires_review=required)
        return Tenant.objects.get(pk=tenant_id)


@transaction.atomic
def tenant_ticket_link_set(*, actor: Actor, tenant_id: uuid.UUID | str, template: str) -> Tenant:
    """The URL template that turns ticket references into links to the tenant's PSA (empty: no
    link): a tenant admin's choice; validated by ``endpoints.tickets.template_clean``."""
    membership = require_member(actor, tenant_id)
    if membership.role != Role.ADMIN:
        raise Forbidden("only a tenant admin can change the ticket link")
    template = template_clean(template)
    with tenancy.bind(tenant_id):
        Tenant.objects.filter(pk=tenant_id).update(ticket_url_template=template)
        return Tenant.objects.get(pk=tenant_id)


@transaction.atomic
def client_group_create(
    *, actor: Actor, tenant: Tenant, name: str, slug: str = "", approver_email: str = ""
) -> ClientGroup:
    """A new client group, with its approval policy: shell and built-in commands need approval."""
    with acting_for(actor, tenant.pk):
        group = ClientGroup.objects.create(
            tenant=tenant, name=name, slug=slug or slugify(name), approver_email=approver_email
        )
        ApprovalPolicy.objects.create(tenant=tenant, client_group=group, **DEFAULT_POLICY)
        return group


def require_admin(actor: Actor, tenant_id: Any, *, doing: str) -> None:
    """Client groups, approval policies and enrollment tokens are a tenant admin's (the console
    offers them in the Django admin, which only admins reach); the server's operator too."""
    if isinstance(actor, Party):
        return
    if require_member(actor, tenant_id).role != Role.ADMIN:
        raise Forbidden(f"only a tenant admin can {doing}")


class ClientGroupRejected(Rejected):
    """A client group that cannot be stored as asked."""


@transaction.atomic
def client_group_add(
    *, actor: Actor, tenant: Tenant, name: str, slug: str = "", approver_email: str = ""
) -> ClientGroup:
    """``client_group_create`` for a tenant admin: a slug already used in the tenant is refused."""
    require_admin(actor, tenant.pk, doing="add a client group")
    name = name.strip()
    slug = slug or slugify(name)
    if not name or not slug:
        raise ClientGroupRejected("a client group needs a name (and a slug made of letters, digits and dashes)")
    with tenancy.bind(tenant.pk):
        if ClientGroup.objects.filter(slug=slug).exists():
            raise ClientGroupRejected(f"the slug {slug!r} is already used by another client group")
    try:
        with transaction.atomic():
            return client_group_create(actor=actor, tenant=tenant, name=name, slug=slug, approver_email=approver_email)
    except IntegrityError:  # a concurrent add took the slug
        raise ClientGroupRejected(f"the slug {slug!r} is already used by another client group") from None


@transaction.atomic
def client_group_update(
    *, actor: Actor, group: ClientGroup, name: str | None = None, approver_email: str | None = None
) -> ClientGroup:
    """Rename a client group or change its designated approver (the slug stays: install commands
    and bulk runs name it)."""
    require_admin(actor, group.tenant_id, doing="change a client group")
    updates: dict[str, Any] = {}
    if name is not None:
        if not name.strip():
            raise ClientGroupRejected("a client group needs a name")
        updates["name"] = name.strip()
    if approver_email is not None:
        updates["approver_email"] = approver_email
    with tenancy.bind(group.tenant_id):
        if updates:
            ClientGroup.objects.filter(pk=group.pk).update(**updates)
        return ClientGroup.objects.get(pk=group.pk)


POLICY_FIELDS = ("requires", "response_deadline_s", "allow_escalation", "allow_without_user", "escalate_after_percent")


@transaction.atomic
def approval_policy_update(
    *, actor: Actor, group: ClientGroup, changes: dict[str, Any], step_up: StepUp | None, address: str | None = None
) -> ApprovalPolicy:
    """Change a client group's approval policy (created with the defaults if it has none): a
    tenant admin's risky change, recorded in the tenant's security log with the step-up check the
    caller made (``step_up``: None for an API token, which was issued under one, and the operator)."""
    require_admin(actor, group.tenant_id, doing="change an approval policy")
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise Rejected(f"unknown policy fields: {', '.join(sorted(unknown))}")
    with tenancy.bind(group.tenant_id):
        policy = ApprovalPolicy.objects.select_for_update().filter(client_group=group).first()
        if policy is None:
            policy = ApprovalPolicy.objects.create(tenant_id=group.tenant_id, client_group=group, **DEFAULT_POLICY)
        changed = [name for name, value in changes.items() if getattr(policy, name) != value]
        if changed:
            ApprovalPolicy.objects.filter(pk=policy.pk).update(**{name: changes[name] for name in changed})
            policy.refresh_from_db()
            security_event_record(
                tenant_id=group.tenant_id,
                kind=SecurityEventKind.POLICY_CHANGED,
                actor=actor,
                address=address,
                target=f"approval policy of {group}",
                detail={
                    "what": "changed",
                    "fields": changed,
                    "requires": policy.requires,
                    "allow_without_user": policy.allow_without_user,
                    "allow_escalation": policy.allow_escalation,
                    **step_up_detail(step_up),
                },
            )
        return policy


# --- enrollment tokens -------------------------------------------------------------


class EnrollmentTokenInvalid(Rejected):
    """An enrollment token asked for with impossible limits."""

    code = "invalid_request"


def enrollment_token_issue(
    *,
    actor: Actor,
    client_group: ClientGroup,
    expires_in: timedelta,
    max_uses: int = 1,
    note: str = "",
    simulated: bool = False,
) -> tuple[EnrollmentToken, str]:
    """Create a token; returns it with the secret, which is never stored and never shown again.
    ``simulated``: the endpoints enrolled with it are simulated agents (the demo's fleet), so marked."""
    if max_uses < 1:
        raise EnrollmentTokenInvalid("max_uses must be at least 1")
    if expires_in <= timedelta(0):
        raise EnrollmentTokenInvalid("expires_in must be positive")
    with acting_for(actor, client_group.tenant_id):
        return _token_create(
            actor=actor,
            client_group=client_group,
            expires_in=expires_in,
            max_uses=max_uses,
            note=note,
            simulated=simulated,
        )


def _token_create(
    *, actor: Actor, client_group: ClientGroup, expires_in: timedelta, max_uses: int, note: str, simulated: bool = False
) -> tuple[EnrollmentToken, str]:
    secret = secrets.new_secret("cet_")
    token = EnrollmentToken.objects.create(
        tenant_id=client_group.tenant_id,
        client_group=client_group,
        token_hash=secrets.digest(secret),
        prefix=secret[:8],
        expires_at=timezone.now() + expires_in,
        max_uses=max_uses,
        note=note,
        simulated=simulated,
        created_by=actors.actor_user(actor),
    )
    return token, secret


def enrollment_token_revoke(*, actor: Actor, token: EnrollmentToken) -> None:
    with acting_for(actor, token.tenant_id):
        EnrollmentToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- enrollment ----------------------------------------------------------------------


class EnrollmentError(Rejected):
    """An enrollment refused; ``code`` and ``status`` are what the enrolling agent is answered."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class Enrollment:
    endpoint: Endpoint
    credential: str
    replaced: bool


@transaction.atomic
def endpoint_enroll(
    *, token_secret: str, machine_id: str, hostname: str, replace: bool = False, address: str | None = None
) -> Enrollment:
    """Exchange an enrollment token for a persistent endpoint identity and credential.

    The same machine enrolling again is refused unless ``replace`` is asked for,
    which keeps the endpoint (and its history) and rotates its credential.
    """
    with tenancy.system():  # the token is how the tenant is found: a named cross-tenant lookup
        token = (
            EnrollmentToken.objects.select_related("client_group")
            .filter(token_hash=secrets.digest(token_secret))
            .first()
        )
    if token is None:
        raise EnrollmentError("invalid_token", "enrollment token is not valid", 401)
    with tenancy.bind(token.tenant_id):
        return _enroll(token=token, machine_id=machine_id, hostname=hostname, replace=replace, address=address)


def _enroll(
    *, token: EnrollmentToken, machine_id: str, hostname: str, replace: bool, address: str | None
) -> Enrollment:
    now = timezone.now()
    if token.revoked_at is not None:
        raise EnrollmentError("token_revoked", "enrollment token was revoked", 401)
    if token.expires_at <= now:
        raise EnrollmentError("token_expired", "enrollment token has expired", 401)
    # Conditional increment: two installers racing for the last use cannot both win.
    claimed = EnrollmentToken.objects.filter(
        pk=token.pk, uses__lt=F("max_uses"), revoked_at__isnull=True, expires_at__gt=now
    ).update(uses=F("uses") + 1)
    if not claimed:
        raise EnrollmentError("token_exhausted", "enrollment token has no uses left", 401)

    credential = secrets.new_secret()
    existing = Endpoint.objects.select_for_update().filter(machine_id=machine_id).first()
    if existing is not None:
        if not replace:
            raise EnrollmentError(
                "already_enrolled",
                "this machine is already enrolled; re-enroll with --replace to replace its identity",
                409,
            )
        if existing.status == EndpointStatus.REVOKED:
            raise EnrollmentError("endpoint_revoked", "this machine's endpoint was revoked by the MSP", 403)
        # Replacing an identity is the endpoint's own group's business: a token of another group
        # (another approval policy) must not move it there. The token use claimed above rolls back.
        if existing.client_group_id != token.client_group_id:
            raise EnrollmentError(
                "wrong_client_group",
                "this machine is enrolled in another client group: re-enroll it with a token of that group",
                403,
            )
        Endpoint.objects.filter(pk=existing.pk).update(
            credential_hash=secrets.digest(credential),
            credential_rotated_at=now,
            hostname=hostname,
            enrolled_with=token,
        )
        existing.refresh_from_db()
        security_event_record(
            tenant_id=existing.tenant_id,
            kind=SecurityEventKind.ENDPOINT_REENROLLED,
            actor=Party.AGENT,
            address=address,
            target=f"endpoint {existing.hostname} ({existing.pk})",
            detail={"machine_id": machine_id, "enrollment_token": token.prefix},
        )
        # In this transaction: the open sessions' transcripts record it (sessions_app); after the
        # commit, the socket of the old identity is closed (bridge).
        for hook in endpoint_reenrolled_hooks():
            hook(existing.pk)
        return Enrollment(endpoint=existing, credential=credential, replaced=True)
    try:
        with transaction.atomic():
            endpoint = Endpoint.objects.create(
                tenant_id=token.tenant_id,
                client_group=token.client_group,
                hostname=hostname,
                machine_id=machine_id,
                credential_hash=secrets.digest(credential),
                enrolled_with=token,
                simulated=token.simulated,
            )
    except IntegrityError:
        raise EnrollmentError("already_enrolled", "this machine is already enrolled", 409) from None
    return Enrollment(endpoint=endpoint, credential=credential, replaced=False)


@transaction.atomic
def endpoint_revoke(*, actor: Actor, endpoint: Endpoint, reason: str = "") -> None:
    """Revoke an endpoint's identity: its agent is refused from now on and stops retrying.
    After the commit, the hooks registered with ``endpoints.hooks.on_endpoint_revoked`` run
    (the bridge closes the live connection)."""
    with acting_for(actor, endpoint.tenant_id):
        transition(
            endpoint,
            to=EndpointStatus.REVOKED,
            table=ENDPOINT_TRANSITIONS,
            updates={"status_changed_by": actors.actor_label(actor), "status_reason": reason[:500]},
        )
    endpoint_id = endpoint.pk

    def tell_hooks() -> None:
        for hook in endpoint_revoked_hooks():
            hook(endpoint_id)

    transaction.on_commit(tell_hooks)


# --- agent identity and presence ----------------------------------------------------------


class AgentAuthError(Forbidden):
    """An agent's credential refused (``code``: unauthenticated or revoked)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def endpoint_authenticate(*, endpoint_id: str, credential: str) -> Endpoint:
    try:
        pk = uuid.UUID(endpoint_id)
    except (ValueError, TypeError):
        raise AgentAuthError("unauthenticated", "unknown endpoint or wrong credential") from None
    with tenancy.system():  # before the credential is verified no tenant is known: a named lookup
        endpoint = Endpoint.objects.filter(pk=pk).first()  # the hello path reads no related row
    if endpoint is None or not secrets.matches(credential, endpoint.credential_hash):
        raise AgentAuthError("unauthenticated", "unknown endpoint or wrong credential")
    if endpoint.status == EndpointStatus.REVOKED:
        raise AgentAuthError("revoked", f"endpoint was revoked: {endpoint.status_reason or 'no reason given'}")
    return endpoint


def endpoint_record_connect(
    *, endpoint: Endpoint, connection_id: str, agent_version: str, machine: dict[str, Any], interval: float
) -> Endpoint:
    """Record a new authenticated connection (in the endpoint's tenant, bound by the bridge).
    The mode stays the server's choice (endpoint.mode)."""
    now = timezone.now()
    values = {
        "connection_id": connection_id,
        "connected_at": now,
        "last_seen_at": now,
        "agent_version": agent_version[:40],
        "machine_context": machine,
        "context_updated_at": now,
        "hostname": str(machine.get("hostname") or endpoint.hostname)[:255],
        "heartbeat_interval": interval,
        "cadence_applied_at": now,  # the welcome carries the mode's cadence: the agent beats at it from now
    }
    Endpoint.objects.filter(pk=endpoint.pk).update(**values)
    for name, value in values.items():  # what was written, without reading the row again (a hello is hot)
        setattr(endpoint, name, value)
    return endpoint


def endpoint_record_disconnect(*, endpoint_id, connection_id: str) -> bool:
    """Mark the connection gone; a newer connection of the same endpoint is left alone."""
    return bool(
        Endpoint.objects.filter(pk=endpoint_id, connection_id=connection_id).update(
            disconnected_at=timezone.now(), presence_announced=Presence.OFFLINE
        )
    )


def endpoint_mode_change(*, endpoint: Endpoint, mode: AgentMode) -> bool:
    """Set the mode the server wants the agent in (the bridge tells the agent: bridge.services.
    endpoint_set_mode is the public entry). False when it already was in that mode."""
    now = timezone.now()
    changed = Endpoint.objects.filter(pk=endpoint.pk).exclude(mode=mode).update(mode=mode, mode_changed_at=now)
    if changed:
        endpoint.mode, endpoint.mode_changed_at = mode, now
    return bool(changed)


def endpoint_mode_change_many(*, endpoint_ids: list[Any], mode: AgentMode, at: datetime | None = None) -> list[Any]:
    """``endpoint_mode_change`` for many endpoints of the bound tenant in two statements; returns
    the ids that changed, in primary-key order. The rows are locked in that order before the
    update (one SELECT ... FOR NO KEY UPDATE ORDER BY id), as ``endpoint_touch_many`` writes them:
    the bulk path and the last-seen flush meet the rows in one order and cannot deadlock."""
    changing = list(
        Endpoint.objects.select_for_update(no_key=True)
        .filter(pk__in=endpoint_ids)
        .exclude(mode=mode)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if changing:
        Endpoint.objects.filter(pk__in=changing).update(mode=mode, mode_changed_at=at or timezone.now())
    return changing


def endpoint_interval_record(*, endpoint_id, interval: float) -> None:
    """The agent applied a new cadence (its mode.set was acknowledged): presence expects it now.
    The answer is a sign of life written now, not at the coalesced last-seen flush (a second or so
    later): the new cadence's deadline counts from it. Measured before: a lazy endpoint last seen
    45 s ago read offline (45 s > 2 active beats + grace) between this answer and the flush, and
    consoles were told so (issue 15 item 2)."""
    now = timezone.now()
    Endpoint.objects.filter(pk=endpoint_id).update(
        heartbeat_interval=interval,
        cadence_applied_at=now,
        last_seen_at=Greatest(Coalesce(F("last_seen_at"), Value(now)), Value(now)),  # never backwards
    )


def endpoint_presence_record(
    *, endpoint: Endpoint, presence: Presence, reason: str = "", since: datetime | None = None, expected: bool = True
) -> bool:
    """Record the connectivity consoles are told about (state, why, since when). With ``expected``
    (the sweep), once per change: False when another process recorded a change first (the row no
    longer holds what ``endpoint`` says was announced). Without, the caller's fresh event wins."""
    rows = Endpoint.objects.filter(pk=endpoint.pk)
    if expected:
        rows = rows.filter(presence_announced=endpoint.presence_announced, presence_reason=endpoint.presence_reason)
    updated = rows.update(presence_announced=presence, presence_reason=reason[:300], presence_since=since)
    if updated:
        endpoint.presence_announced, endpoint.presence_reason, endpoint.presence_since = presence, reason[:300], since
    return bool(updated)


def endpoint_context_record(*, endpoint_id, machine: dict[str, Any]) -> None:
    """The machine context an agent reported while connected (its heartbeats carry it now and
    then): the last known state of the machine, kept for when it drops off."""
    Endpoint.objects.filter(pk=endpoint_id).update(machine_context=machine, context_updated_at=timezone.now())


def endpoint_touch_many(*, seen: dict[Any, Any]) -> None:
    """Write coalesced last-seen times in one statement batch: heartbeats never cost a write each.
    System work (one process's agents, of every tenant): raw SQL by primary key, no manager."""
    from django.db import connection

    if not seen:
        return
    pk_field = Endpoint._meta.pk
    seen_field = Endpoint._meta.get_field("last_seen_at")
    # In primary-key order: psycopg may send the batch as one implicit transaction, and every
    # writer that locks several endpoint rows (a bulk run) takes them in this order too.
    rows = []
    for pk, ts in sorted(seen.items(), key=lambda item: item[0]):
        at = seen_field.get_db_prep_value(ts, connection)
        rows.append((at, pk_field.get_db_prep_value(pk, connection), at))
    table = connection.ops.quote_name(Endpoint._meta.db_table)
    # Never backwards: with several server processes, one's flush may land after the endpoint
    # reconnected to another (which wrote a newer time) and after its old socket's disconnect;
    # written backwards, last-seen would fall before that disconnect and the endpoint read offline.
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET last_seen_at = %s WHERE id = %s AND (last_seen_at IS NULL OR last_seen_at < %s)",
            rows,
        )
