"""REST API tokens with a scope: django-rest-knox keeps the token (only its hash), Caisey's
``ApiToken`` row beside it keeps the tenant, the scope and the last use.

- ``read`` tokens may only read (GET, HEAD, OPTIONS); ``operator`` tokens may also change things,
  within their owner's role (a viewer's token never writes: ``IsOperator`` still applies).
- A tenant's admins list, issue, rotate and revoke any of the tenant's tokens on the console's API
  tokens page, each after a recent check (``step_up``, recorded in the event); a token is shown
  once, when issued or rotated. Issuing, rotating and revoking are security events.
- A knox token without a Caisey row (made some other way) may only read: fail closed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication
from knox.models import AuthToken
from rest_framework.permissions import SAFE_METHODS, BasePermission

from caisey import tenancy
from caisey.actors import Actor, Party
from caisey.errors import Rejected
from endpoints.access import StepUp, step_up_given
from endpoints.models import ApiToken, Membership, SecurityEventKind, TokenScope
from endpoints.people import require_tenant_admin
from endpoints.security_log import security_event_record

User = get_user_model()

MAX_DAYS = 3650
# The last use is written at most this often (seconds) per token: a write per API request would
# double the writes of a script polling the API.
LAST_USED_EVERY_S = 60


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once; only its hash is kept


def api_token_issue(
    *,
    actor: Actor,
    tenant_id: uuid.UUID,
    owner,
    name: str,
    scope: str,
    days: int,
    step_up: StepUp | None,
    address: str | None = None,
) -> IssuedToken:
    """A new token of ``owner`` (a member of ``tenant_id``). People: the tenant's admins only,
    after a recent check (``step_up``); the command line (``Party.OPERATOR``) for any member."""
    if not isinstance(actor, Party):
        require_tenant_admin(actor, tenant_id)
    checked = step_up_given(actor, step_up, doing="issuing an API token")
    name = name.strip()
    if not name or len(name) > 100:
        raise Rejected("name the token (what it is for), at most 100 characters")
    if scope not in TokenScope.values:
        raise Rejected(f"scope must be one of {', '.join(TokenScope.values)}")
    if not 1 <= days <= MAX_DAYS:
        raise Rejected(f"a token expires after 1 to {MAX_DAYS} days")
    with tenancy.bind(tenant_id):
        membership = Membership.objects.select_related("user").filter(user_id=owner.pk).first()
        if membership is None:
            raise Rejected("the token's owner must be a member of this tenant")
        if not membership.user.is_active:
            raise Rejected("the token's owner is deactivated")
        if scope == TokenScope.OPERATOR and not membership.can_operate:
            raise Rejected("a viewer's token can only read: choose the read-only scope")
        with transaction.atomic():
            knox_token, secret = AuthToken.objects.create(user=membership.user, expiry=timedelta(days=days))
            token = ApiToken.objects.create(
                token=knox_token,
                tenant_id=tenant_id,
                name=name,
                scope=scope,
                issued_by=None if isinstance(actor, Party) else actor,
            )
            security_event_record(
                tenant_id=tenant_id,
                kind=SecurityEventKind.TOKEN_ISSUED,
                actor=actor,
                person=membership.user,
                address=address,
                target=f"token {knox_token.token_key} ({name})",
                detail={"scope": scope, "days": days, **checked},
            )
    return IssuedToken(token=token, secret=secret)


def api_token_revoke(
    *, actor: Actor, tenant_id: uuid.UUID, token_id: int, step_up: StepUp | None, address: str | None = None
) -> None:
    """Revoke one of ``tenant_id``'s tokens (at once: the next request with it is a 401).
    Another tenant's token id is not found. People: the tenant's admins, after a recent check."""
    if not isinstance(actor, Party):
        require_tenant_admin(actor, tenant_id)
    checked = step_up_given(actor, step_up, doing="revoking an API token")
    with tenancy.bind(tenant_id), transaction.atomic():
        token = ApiToken.objects.select_related("token", "token__user").select_for_update(of=("self",)).get(pk=token_id)
        knox_token = token.token
        security_event_record(
            tenant_id=tenant_id,
            kind=SecurityEventKind.TOKEN_REVOKED,
            actor=actor,
            person=knox_token.user,
            address=address,
            target=f"token {knox_token.token_key} ({token.name})",
            detail={"scope": token.scope, **checked},
        )
        knox_token.delete()  # its ApiToken row goes with it


def api_token_rotate(
    *, actor: Actor, tenant_id: uuid.UUID, token_id: int, step_up: StepUp | None, address: str | None = None
) -> IssuedToken:
    """Replace one of ``tenant_id``'s tokens with a new secret, at once: same owner, name and
    scope, the same lifetime from now; the old secret stops working in the same transaction.
    People: the tenant's admins (not only the owner), after a recent check. One security event
    (``token_rotated``) names both tokens. Another tenant's token id is not found."""
    if not isinstance(actor, Party):
        require_tenant_admin(actor, tenant_id)
    checked = step_up_given(actor, step_up, doing="rotating an API token")
    with tenancy.bind(tenant_id), transaction.atomic():
        old = ApiToken.objects.select_related("token", "token__user").select_for_update(of=("self",)).get(pk=token_id)
        owner, old_key = old.token.user, old.token.token_key
        if not owner.is_active:
            raise Rejected("the token's owner is deactivated: revoke the token instead")
        lifetime = (old.token.expiry - old.token.created) if old.token.expiry else timedelta(days=MAX_DAYS)
        knox_token, secret = AuthToken.objects.create(user=owner, expiry=lifetime)
        token = ApiToken.objects.create(
            token=knox_token,
            tenant_id=tenant_id,
            name=old.name,
            scope=old.scope,
            issued_by=None if isinstance(actor, Party) else actor,
        )
        security_event_record(
            tenant_id=tenant_id,
            kind=SecurityEventKind.TOKEN_ROTATED,
            actor=actor,
            person=owner,
            address=address,
            target=f"token {knox_token.token_key} ({old.name})",
            detail={"scope": old.scope, "replaces": old_key, **checked},
        )
        old.token.delete()  # its ApiToken row goes with it
    return IssuedToken(token=token, secret=secret)


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    prefix: str
    owner: str
    scope: str
    scope_label: str
    created: datetime
    expiry: datetime | None
    last_used_at: datetime | None
    issued_by: str


def api_tokens_list(*, tenant_id: uuid.UUID) -> list[TokenRow]:
    """The tenant's unexpired tokens, newest first."""
    now = timezone.now()
    with tenancy.bind(tenant_id):
        tokens = (
            ApiToken.objects.select_related("token", "token__user", "issued_by")
            .exclude(token__expiry__lt=now)
            .order_by("-token__created")
        )
        return [
            TokenRow(
                id=t.pk,
                name=t.name,
                prefix=t.token.token_key,
                owner=t.token.user.get_username(),
                scope=t.scope,
                scope_label=t.get_scope_display(),
                created=t.token.created,
                expiry=t.token.expiry,
                last_used_at=t.last_used_at,
                issued_by=t.issued_by.get_username() if t.issued_by else "the command line",
            )
            for t in tokens
        ]


def token_scope(auth_token: AuthToken) -> str:
    """The scope of an authenticated knox token: read-only when Caisey has no row for it. Read in
    the bound tenant (the token owner's): a row of another tenant would not be found either."""
    scope = ApiToken.objects.filter(token_id=auth_token.pk).values_list("scope", flat=True).first()
    return scope or TokenScope.READ


class ScopedTokenAuthentication(TokenAuthentication):
    """knox's token authentication, noting the token's last use (at most every LAST_USED_EVERY_S)."""

    def authenticate_credentials(self, token):
        user, auth_token = super().authenticate_credentials(token)
        now = timezone.now()
        # A conditional update of the token's own row, found by its hash before any tenant is
        # bound (DRF authenticates before the view binds one): a named cross-tenant write of
        # that one row, nothing read.
        with tenancy.system():
            ApiToken.objects.filter(token_id=auth_token.pk).exclude(
                last_used_at__gt=now - timedelta(seconds=LAST_USED_EVERY_S)
            ).update(last_used_at=now)
        return user, auth_token


class ScopedTokenScheme(KnoxTokenScheme):
    """The OpenAPI schema describes Caisey's token authentication as knox's (it is knox's)."""

    target_class = "endpoints.api_tokens.ScopedTokenAuthentication"


class TokenScopeAllows(BasePermission):
    """A read-only token may only read; sessions and operator tokens pass (roles still apply)."""

    message = "this API token is read-only: it cannot change anything"

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS or not isinstance(request.auth, AuthToken):
            return True
        return token_scope(request.auth) == TokenScope.OPERATOR
