"""The console's entry point: binds the signed-in user's tenant for the whole request.

The tenant is resolved by ``endpoints.access.membership_resolve`` (the one resolution, also
used by the API's base view and the console socket). Three outcomes:

- a member: their tenant is bound (``tenancy.bind``) and ``request.membership`` /
  ``request.tenant`` are set;
- the superuser fallback, explicit: a superuser WITHOUT a membership is the server's
  operator, not a tenant's technician; the request runs under ``tenancy.system()`` so the
  Django admin can show every tenant. Console pages and the API still refuse them (they
  require a membership). A superuser WITH a membership is bound to that tenant like anyone;
- anybody else (anonymous, inactive, no membership): nothing is bound, so any tenant-owned
  read fails closed; views redirect to the login or answer 403.
"""

from __future__ import annotations

import zoneinfo

from django.utils import timezone

from caisey import tenancy
from endpoints.access import membership_resolve
from endpoints.people import time_zone_of


class TenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = None
        request.tenant = None
        access = membership_resolve(user=getattr(request, "user", None))
        if access is None:
            return self.get_response(request)
        if access.membership is not None:
            request.membership = access.membership
            request.tenant = access.membership.tenant
            with tenancy.bind(access.membership.tenant_id):
                return self.get_response(request)
        # The superuser fallback (see the module docstring): cross-tenant, and named so.
        with tenancy.system():
            return self.get_response(request)


class TimeZoneMiddleware:
    """Times on console pages in the signed-in member's zone (``endpoints.people.time_zone_of``:
    their own choice, else their tenant's, else TIME_ZONE), activated for this request only. After
    ``TenantMiddleware``, which resolved ``request.membership``. A zone this server no longer knows
    (the tz database changed since it was chosen) falls back to the default rather than failing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            timezone.activate(zoneinfo.ZoneInfo(time_zone_of(getattr(request, "membership", None))))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
