"""Shared helpers for console views: guards (member, operator), lookups and form values."""

from __future__ import annotations

from datetime import datetime
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime


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


def get_or_404(getter, **kwargs):
    """Call a selector; a missing object, or a malformed id, is simply not found."""
    try:
        return getter(**kwargs)
    except (ObjectDoesNotExist, ValidationError, ValueError):
        raise Http404("not found") from None


def posted_datetime(request, field: str = "at") -> datetime | None:
    """A datetime from a form field (a datetime-local input is naive: read in the server's zone)."""
    value = parse_datetime(request.POST.get(field, ""))
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value
