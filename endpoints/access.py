"""Who may act, and for which tenant: the one place a user's tenant and membership are resolved.

``membership_resolve`` is used by every entry point (console middleware, the API's base
view, the console socket). Services that act for a person check the person with
``require_operator`` / ``require_member`` and bind the person's tenant with ``acting_for``:
inside it the scoped managers see only that tenant, and writing another tenant's row raises
(caisey/tenancy.py).

The superuser fallback: a Django superuser without a membership is the server's operator,
not a tenant's technician. The console middleware lets such a user through the Django admin
under ``tenancy.system()`` (visibly cross-tenant); they get no console page and no API
access, because every console view and API view requires a membership.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from allauth.account.authentication import get_authentication_records
from allauth.mfa.models import Authenticator
from django.conf import settings

from caisey import tenancy
from caisey.actors import Actor, Party
from caisey.errors import Forbidden
from endpoints.models import Membership, TenantSSO


@dataclass(frozen=True)
class Access:
    """What an authenticated user may reach: a tenant through a membership, or (superusers
    without one) the whole server, for the Django admin only."""

    membership: Membership | None
    superuser: bool

    @property
    def tenant_id(self) -> uuid.UUID | None:
        return self.membership.tenant_id if self.membership else None


def membership_resolve(*, user) -> Access | None:
    """The one resolution of a signed-in user's tenant. None: an anonymous or inactive user,
    or one with neither a membership nor superuser rights (they reach nothing).

    Crosses tenants by nature (it is how the tenant is found): a named ``tenancy.system()`` read."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    with tenancy.system():
        membership = Membership.objects.select_related("tenant").filter(user=user).first()
    if membership is not None:
        return Access(membership=membership, superuser=user.is_superuser)
    if user.is_superuser:
        return Access(membership=None, superuser=True)
    return None


def _membership_of(actor: Actor) -> Membership | None:
    if isinstance(actor, Party):
        return None
    if isinstance(actor, str) or actor is None:
        raise TypeError(f"actor must be a user or a caisey.actors.Party, not {actor!r}")
    try:
        return actor.membership  # the reverse one-to-one of Membership.user
    except Membership.DoesNotExist:
        return None


def require_member(actor: Actor, tenant_id) -> Membership:
    """``actor`` is a person with a membership of ``tenant_id`` (any role)."""
    membership = _membership_of(actor)
    if membership is None or str(membership.tenant_id) != str(tenant_id):
        raise Forbidden("only members of this tenant can do this")
    return membership


def require_operator(actor: Actor, tenant_id) -> Membership:
    """``actor`` is an admin or technician of ``tenant_id`` (viewers only read)."""
    membership = _membership_of(actor)
    if membership is None or str(membership.tenant_id) != str(tenant_id) or not membership.can_operate:
        raise Forbidden("only the tenant's technicians and admins can do this")
    return membership


@contextlib.contextmanager
def acting_for(actor: Actor, tenant_id) -> Iterator[Membership | None]:
    """Check that ``actor`` may operate in ``tenant_id`` and bind that tenant for the block.

    A system party (sweeps, the agent, the bridge) acts for the row's tenant it names; a
    person must be an operator of it."""
    membership = None if isinstance(actor, Party) else require_operator(actor, tenant_id)
    with tenancy.bind(tenant_id):
        yield membership


def second_factor_missing(*, user, membership: Membership | None, session=None) -> bool:
    """True when ``user`` must enrol a second factor before reaching the console: their tenant
    requires one (``Tenant.mfa_required``), or they are the server's operator (a superuser
    without a membership, unless CAISEY_OPERATOR_MFA_REQUIRED is off), and they have neither
    an authenticator app nor a passkey. Recovery codes alone do not count. A single sign-on
    whose provider asserted multi-factor authentication stands in for one, for that sign-in
    (``session``), when the tenant accepts it (``idp_mfa_at``)."""
    if membership is not None:
        required = membership.tenant.mfa_required
    else:
        required = user.is_superuser and settings.CAISEY["OPERATOR_MFA_REQUIRED"]
    if not required:
        return False
    has_factor = Authenticator.objects.filter(
        user_id=user.pk, type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]
    ).exists()
    return not has_factor and idp_mfa_at(session, user=user, membership=membership) is None


# --- the identity provider's own multi-factor sign-in (the OpenID Connect ``amr`` claim) -----------

# What the provider said about a single sign-on of this session (endpoints.identity writes it
# before the sign-in, binds it to the person at the sign-in).
IDP_SIGN_IN = "caisey_idp_sign_in"
# amr values (RFC 8176) that say the provider checked more than a password: "mfa" and "mca" say so
# outright; the others are a possession factor (one-time code, hardware or software key, smart
# card, text or call to a phone). Entra ID and Okta send "mfa"; Google sends no amr.
IDP_MFA_AMR = frozenset({"mfa", "mca", "otp", "hwk", "swk", "sc", "sms", "tel"})


def amr_is_mfa(amr) -> bool:
    return bool(IDP_MFA_AMR.intersection(amr or []))


# A provider's note is bound to the sign-in it came with: the sign-in must follow within this long.
IDP_NOTE_FRESH_S = 120.0


def idp_note_for_sign_in(session, *, user, now: float) -> dict | None:
    """The provider's note of this session (written by endpoints.identity just before a single
    sign-on), if it belongs to the sign-in of ``user`` happening now: fresh, and naming one of
    their own linked accounts. A password sign-in after an abandoned single sign-on gets None."""
    from allauth.socialaccount.models import SocialAccount

    note = session.get(IDP_SIGN_IN) if session is not None else None
    if not note or now - float(note.get("at", 0)) > IDP_NOTE_FRESH_S or note.get("user_id") not in (None, user.pk):
        return None
    if not SocialAccount.objects.filter(user=user, provider=note.get("provider"), uid=note.get("uid")).exists():
        return None
    return note


def idp_mfa_at(session, *, user, membership: Membership | None) -> float | None:
    """When this session's single sign-on was checked by the provider with more than a password,
    if the person's tenant accepts that in place of Caisey's second factor
    (``TenantSSO.accept_idp_mfa``, off by default); else None."""
    note = session.get(IDP_SIGN_IN) if session is not None else None
    if not note or membership is None or note.get("user_id") != user.pk or not note.get("mfa"):
        return None
    with tenancy.bind(membership.tenant_id):
        accepted = TenantSSO.objects.filter(
            tenant_id=membership.tenant_id, app__provider_id=note.get("provider"), accept_idp_mfa=True
        ).exists()
    return float(note["at"]) if accepted else None


# --- step-up: a recent second-factor check before risky actions ---------------------------------

# When this session signed in (a Unix time; written by endpoints.identity on every login).
LOGIN_AT = "caisey_login_at"


@dataclass(frozen=True)
class StepUp:
    """The check that let a risky action through: how the person proved it was them, and when."""

    method: str  # "mfa" (authenticator app, passkey, recovery code), "idp-mfa", "password" or "sign-in"
    at: float  # a Unix time

    def as_record(self) -> dict:
        return {"method": self.method, "at": round(self.at, 3)}


class StepUpRequired(Exception):
    """The person must confirm it is them (``url``: allauth's re-authentication page) before
    this action. Not an AppError: views let it through to ``endpoints.identity``'s middleware,
    which sends the browser there and back to the page the form came from."""

    def __init__(self, url_name: str) -> None:
        super().__init__("confirm it is you to continue")
        self.url_name = url_name


def step_up_require(request) -> StepUp:
    """The one step-up check of the access layer, for views about to do something risky:
    shell commands, service restarts, bulk runs, share links, approval policy changes.

    Someone with a second factor needs a check of it (at sign-in, or re-authenticating) within
    their tenant's ``step_up_window_s``; someone without one (their tenant does not require it)
    needs a recent sign-in or password confirmation. Returns that check, for the transcript; raises
    ``StepUpRequired`` otherwise."""
    membership = getattr(request, "membership", None)
    if membership is None:
        raise Forbidden("only members of a tenant can do this")
    has_factor = Authenticator.objects.filter(
        user_id=request.user.pk, type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]
    ).exists()
    methods = {"mfa"} if has_factor else {"mfa", "password"}
    records = [r for r in get_authentication_records(request, request.user) if r.get("method") in methods and "at" in r]
    if not has_factor and request.session.get(LOGIN_AT) is not None:
        records.append({"method": "sign-in", "at": request.session[LOGIN_AT]})  # any way of signing in
    idp_at = idp_mfa_at(request.session, user=request.user, membership=membership)
    if idp_at is not None:  # the provider's multi-factor sign-in, where the tenant accepts it:
        # this session's sign-in was that one, so it is named for what it was
        records = [r for r in records if r["method"] != "sign-in"] + [{"method": "idp-mfa", "at": idp_at}]
    if records:
        latest = max(records, key=lambda r: r["at"])
        if time.time() - latest["at"] <= membership.tenant.step_up_window_s:
            return StepUp(method=latest["method"], at=latest["at"])
    raise StepUpRequired("mfa_reauthenticate" if has_factor else "account_reauthenticate")


def api_step_up(request, *, risky: bool) -> StepUp | None:
    """The step-up rule of the REST API, for the same risky things as the console. A request
    signed by an API token (``request.auth`` set) needs no check here: the token was itself issued
    under a step-up, carries a scope and is revocable by tenant admins (docs/identity.md). A
    request riding a browser session is held to the console's rule, or refused: without this, a
    session past its window could run a shell command through ``/api/v1/`` that the console
    would refuse."""
    if not risky or getattr(request, "auth", None) is not None:
        return None
    try:
        return step_up_require(request)
    except StepUpRequired as exc:
        raise Forbidden(
            "this needs a recent check that it is you: confirm it in the console "
            "(a second factor or your password), or use an API token"
        ) from exc


def step_up_detail(step_up: StepUp | None) -> dict:
    """What a security-log event's detail says of a check: ``{"step_up": record}``, or nothing."""
    return {"step_up": step_up.as_record()} if step_up is not None else {}


def step_up_given(actor: Actor, step_up: StepUp | None, *, doing: str) -> dict:
    """The services of tenant-level risky changes (API tokens, policies, single sign-on) take the
    check the view made (``step_up_require``) and record it with their security-log event: this
    returns that part of the event's detail (``step_up_detail``). A person must bring one; the
    command line (a ``Party``) needs none, and its events say nothing of one."""
    if isinstance(actor, Party):
        return {}
    if step_up is None:
        raise Forbidden(f"{doing} needs a recent check that it is you (a second factor or your password)")
    return step_up_detail(step_up)
