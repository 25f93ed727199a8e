"""Caisey's identity rules on top of django-allauth (login, second factor, lockout).

allauth does the work: the login form and its rate limits (per client address and per
account, the same answer for a wrong user and a wrong password), TOTP, WebAuthn passkeys and
recovery codes (``allauth.mfa``). Caisey adds:

- nobody signs up: people are created by operators (``create_tenant``) or invited by their
  tenant's admins (the members page);
- a signed-in session ends after ``SESSION_IDLE_S`` without a request and ``SESSION_ABSOLUTE_S``
  after the login, whatever happens (``SessionLifetimeMiddleware``; the console socket checks the
  same, ``session_still_good``); logging out, being deactivated and a password change ring the
  person's console sockets to re-check at once (``endpoints.hooks.sign_in_changed_hooks``);
- a tenant that requires a second factor (``Tenant.mfa_required``) sends a member without one
  to enrol before any console page, the Django admin or the API with a session
  (``SecondFactorMiddleware``); the console socket refuses them too (bridge/consumers/console.py).
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.signals import password_changed, password_reset, password_set
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model, logout
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.dispatch import receiver
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.crypto import constant_time_compare

from caisey import tenancy
from caisey.console import back_url
from endpoints.access import (
    IDP_SIGN_IN,
    LOGIN_AT,
    StepUpRequired,
    amr_is_mfa,
    idp_note_for_sign_in,
    second_factor_missing,
)
from endpoints.models import Membership, TenantSSO
from endpoints.people import membership_join_by_sso, membership_sso_reapply, sign_in_changed, sso_role_for

# Paths a signed-in person without a required second factor may still reach: allauth's own
# pages (where they enrol), logging out, static files, and what is not a person's console
# (health, metrics, the agent's enrolment, approvers' and share links).
ENROLMENT_EXEMPT_PREFIXES = (
    "/accounts/",
    "/logout/",
    "/static/",
    "/healthz",
    "/metrics",
    "/api/agent/",
    "/approve/",
    "/share/",
)


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return False  # people are created by operators or invited by their tenant's admins


def _sso_of(sociallogin) -> TenantSSO | None:
    # Which tenant's provider vouched for the person: found across tenants by name.
    with tenancy.system():
        return TenantSSO.objects.select_related("tenant").filter(app__provider_id=sociallogin.account.provider).first()


def _claims(sociallogin) -> dict:
    data = sociallogin.account.extra_data or {}
    return data.get("userinfo") or data.get("id_token") or {}


def _amr(sociallogin) -> list[str]:
    """How the provider authenticated the person (the ID token's ``amr`` claim, RFC 8176)."""
    data = sociallogin.account.extra_data or {}
    amr = (data.get("id_token") or {}).get("amr") or (data.get("userinfo") or {}).get("amr") or []
    return [str(a) for a in ([amr] if isinstance(amr, str) else amr)][:20]


def _groups(sso: TenantSSO, claims: dict) -> list[str]:
    groups = claims.get(sso.group_claim) or []
    return [str(g) for g in ([groups] if isinstance(groups, str) else groups)][:50]


def _refuse(why: str):
    return ImmediateHttpResponse(redirect(f"{reverse('login')}?{urlencode({'sso': why})}"))


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Single sign-on per tenant: only the tenant's own provider signs its people in; a first
    sign-in creates the membership when the person's groups or verified e-mail domain qualify
    (``endpoints.people.sso_role_for``); every later one re-applies the mapping (a new role, or
    deactivation for someone who no longer qualifies); anyone else is sent back to the login
    page. What the provider says about how it checked the person (``amr``) is noted in the
    session for the sign-in (``endpoints.access.IDP_SIGN_IN``) and the security log."""

    def pre_social_login(self, request, sociallogin) -> None:
        sso = _sso_of(sociallogin)
        if sso is None:
            raise _refuse("unknown")
        claims = _claims(sociallogin)
        role = sso_role_for(sso, claims)
        if sociallogin.is_existing:
            with tenancy.system():
                membership = Membership.objects.select_related("user").filter(user=sociallogin.user).first()
            if membership is None or membership.tenant_id != sso.tenant_id or not membership.user.is_active:
                raise _refuse("refused")
            outcome = membership_sso_reapply(
                sso=sso, membership=membership, role=role, claims_note={"groups": _groups(sso, claims)}
            )
            if outcome == "deactivated":
                raise _refuse("refused")
        elif role is None:
            raise _refuse("refused")
        if request is not None and hasattr(request, "session"):
            amr = _amr(sociallogin)
            request.session[IDP_SIGN_IN] = {
                "provider": sociallogin.account.provider,
                "uid": sociallogin.account.uid,
                "amr": amr,
                "mfa": amr_is_mfa(amr),
                "at": time.time(),
                # Known now for a returning person (a re-authentication through the provider
                # signs nobody in again); a newcomer's is bound at the sign-in (idp_note_bind).
                "user_id": sociallogin.user.pk if sociallogin.is_existing else None,
            }

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return True  # only people pre_social_login let through reach this

    def save_user(self, request, sociallogin, form=None):
        with transaction.atomic():
            user = super().save_user(request, sociallogin, form)
            sso = _sso_of(sociallogin)
            role = sso_role_for(sso, _claims(sociallogin)) if sso is not None else None
            if sso is None or role is None:  # checked in pre_social_login; the claims did not change
                raise _refuse("refused")
            membership_join_by_sso(sso=sso, user=user, role=role)
        return user


class SecondFactorMiddleware:
    """After ``TenantMiddleware``: a member of a tenant that requires a second factor, who has
    none yet, enrols before anything else (the API answers 403 instead of a redirect)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            user is None
            or not user.is_authenticated
            or request.path.startswith(ENROLMENT_EXEMPT_PREFIXES)
            or not second_factor_missing(
                user=user, membership=getattr(request, "membership", None), session=getattr(request, "session", None)
            )
        ):
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"error": "second_factor_required", "detail": "enrol a second factor in the console first"},
                status=403,
            )
        messages.info(
            request,
            "Your organisation requires a second factor: set up an authenticator app or a passkey to continue.",
        )
        return redirect(f"{reverse('mfa_index')}?{urlencode({'next': request.get_full_path()})}")

    def process_exception(self, request, exc):
        """A risky action without a recent check (``endpoints.access.step_up_require``): confirm
        it is you (allauth's re-authentication), then back to the page the form came from."""
        if not isinstance(exc, StepUpRequired):
            return None
        messages.info(request, "Confirm it is you to continue: this action needs a recent check.")
        return redirect(f"{reverse(exc.url_name)}?{urlencode({'next': back_url(request)})}")


# --- session lifetime ------------------------------------------------------------------------------

SEEN_AT = "caisey_seen_at"
# The last-seen time is written at most this often (seconds): a write per request would cost a
# session save on every page and poll; the idle timeout is exact to within this.
SEEN_WRITE_EVERY_S = 30.0
# A page's own refreshes on a doorbell (caisey/static/console/session.js) are not the person's
# activity: they do not hold the idle timeout off.
LIVE_REFRESH_HEADER = "X-Caisey-Live"


def session_expired(data, *, now: float | None = None) -> str | None:
    """Why a signed-in session's data is no longer good ("idle", "lifetime"), or None.
    A session without the times (made before they were recorded) has expired."""
    now = time.time() if now is None else now
    login_at, seen_at = data.get(LOGIN_AT), data.get(SEEN_AT)
    if login_at is None or seen_at is None or now - login_at > settings.CAISEY["SESSION_ABSOLUTE_S"]:
        return "lifetime"
    if now - seen_at > settings.CAISEY["SESSION_IDLE_S"]:
        return "idle"
    return None


@receiver(user_logged_in, dispatch_uid="caisey-session-times")
def _record_login(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        now = time.time()
        request.session[LOGIN_AT] = now
        request.session[SEEN_AT] = now
        idp_note_bind(request.session, user=user, now=now)


def idp_note_bind(session, *, user, now: float) -> dict | None:
    """At a sign-in: the provider's note of this session now belongs to ``user`` if it came with
    this sign-in (``idp_note_for_sign_in``); any other note is dropped."""
    note = idp_note_for_sign_in(session, user=user, now=now)
    if note is None:
        session.pop(IDP_SIGN_IN, None)
        return None
    session[IDP_SIGN_IN] = {**note, "user_id": user.pk}
    return session[IDP_SIGN_IN]


@receiver(user_logged_out, dispatch_uid="caisey-logout-rings-sockets")
def _ring_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        user_id = user.pk
        transaction.on_commit(lambda: sign_in_changed(user_id=user_id))


@receiver(password_changed, dispatch_uid="caisey-password-changed-rings-sockets")
@receiver(password_set, dispatch_uid="caisey-password-set-rings-sockets")
@receiver(password_reset, dispatch_uid="caisey-password-reset-rings-sockets")
def _ring_on_password_change(sender, request, user, **kwargs) -> None:
    user_id = user.pk
    transaction.on_commit(lambda: sign_in_changed(user_id=user_id))


class SessionLifetimeMiddleware:
    """After the authentication middleware: sign out a session past its idle timeout or its
    absolute lifetime (a page is sent to the login, which says why; anything else goes on
    anonymous and is refused as such), and note the time of this request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = time.time()
            reason = session_expired(request.session, now=now)
            if reason is not None:
                logout(request)
                if request.method == "GET" and not request.path.startswith("/api/"):
                    query = urlencode({"next": request.get_full_path(), "expired": reason})
                    return redirect(f"{reverse('login')}?{query}")
            elif (
                now - request.session[SEEN_AT] >= SEEN_WRITE_EVERY_S and request.headers.get(LIVE_REFRESH_HEADER) != "1"
            ):
                request.session[SEEN_AT] = now
        return self.get_response(request)


def session_still_good(*, session_key: str | None, user_id) -> bool:
    """Is the stored session ``session_key`` still signed in as ``user_id``, within its idle
    timeout and lifetime, with the user active and the password unchanged since? (The console
    socket asks on a doorbell and now and then.)"""
    if not session_key:
        return False
    store = import_session_store()(session_key)
    data = store.load()
    if str(data.get(SESSION_KEY)) != str(user_id) or session_expired(data) is not None:
        return False
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return user is not None and constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


def import_session_store():
    from importlib import import_module

    return import_module(settings.SESSION_ENGINE).SessionStore
