"""Caisey's identity rules on top of django-allauth (login, second factor, lockout).

allauth does the work: the login form and its rate limits (per client address and per
account, the same answer for a wrong user and a wrong password), TOTP, WebAuthn passkeys and
recovery codes (``allauth.mfa``). Caisey adds:

- nobody signs up: people are created by operators (``create_tenant``) or invited by their
  tenant's admins (the members page);
- a tenant that requires a second factor (``Tenant.mfa_required``) sends a member without one
  to enrol before any console page, the Django admin or the API with a session
  (``SecondFactorMiddleware``); the console socket refuses them too (bridge/consumers/console.py).
"""

from __future__ import annotations

from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from endpoints.access import second_factor_missing

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
            or not second_factor_missing(user=user, membership=getattr(request, "membership", None))
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
