"""The tenant-binding base of every REST API view.

DRF authenticates inside the view (a token is read after every middleware has run), so
the console's ``TenantMiddleware`` cannot bind the tenant for token requests. Every API
view derives from ``TenantScopedAPIMixin`` instead: right after DRF has authenticated the
request it resolves the user's membership (``endpoints.access.membership_resolve``, the one
resolution), refuses users without one (superusers without a membership too: the API is
for tenant members), and binds their tenant on an ``ExitStack`` that ``dispatch`` closes
whatever happens. A view that forgot the mixin has no tenant bound, and the scoped managers
raise: the API fails closed.

The app-free parts of the API (parser, pagination, errors, schema hook) live in
``caisey/api.py``.
"""

from __future__ import annotations

import contextlib

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from caisey import tenancy
from caisey.api import JSONParser
from endpoints.access import membership_resolve
from endpoints.api_tokens import TokenScopeAllows


class IsOperator(BasePermission):
    """Anyone with a membership may read; only admins and technicians may change anything."""

    message = "viewers can read but not change anything"

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        membership = getattr(request, "membership", None)
        return membership is not None and membership.can_operate


class TenantScopedAPIMixin:
    """Binds the authenticated user's tenant for the whole request; refuses users without one.

    The binding is entered in ``perform_authentication`` (part of DRF's ``initial``, right
    before permissions are checked) on the request's ``ExitStack``, which ``dispatch``
    closes. JSON only: the browsable API's HTML renderer would render after the tenant is
    unbound.
    """

    permission_classes = [IsAuthenticated, IsOperator, TokenScopeAllows]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]

    def dispatch(self, request, *args, **kwargs):
        with contextlib.ExitStack() as scope:
            self._tenant_scope = scope
            try:
                return super().dispatch(request, *args, **kwargs)
            finally:
                self._tenant_scope = None

    def perform_authentication(self, request) -> None:
        super().perform_authentication(request)
        request.membership = None
        request.tenant = None
        user = request.user
        if user is None or not user.is_authenticated:
            return  # IsAuthenticated answers 401 next
        access = membership_resolve(user=user)
        if access is None or access.membership is None:
            raise exceptions.PermissionDenied("your account is not a member of any tenant")
        request.membership = access.membership
        request.tenant = access.membership.tenant
        self._tenant_scope.enter_context(tenancy.bind(access.membership.tenant_id))


# For view sets, mix TenantScopedAPIMixin in first.
class TenantScopedAPIView(TenantScopedAPIMixin, APIView):
    pass
