"""Shared guards for console views: membership (any role) and operator (admin/technician)."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def member_required(view):
    """Signed in and a member of a tenant; anything else never reaches tenant data."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.membership is None:
            raise PermissionDenied("your account is not a member of any tenant")
        return view(request, *args, **kwargs)

    return wrapped


def operator_required(view):
    """Members who may act on endpoints (admins and technicians, not viewers)."""

    @member_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.membership.can_operate:
            raise PermissionDenied("viewers cannot change anything")
        return view(request, *args, **kwargs)

    return wrapped
