"""Shared helpers for console views: guards (member, operator), lookups, form values, and
the one place where application errors become what a technician sees on a page."""

from __future__ import annotations

from datetime import datetime
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme

from caisey.errors import app_error, http_status


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


def back_url(request, default: str = "/") -> str:
    """Where a console form goes back to: its ``next`` field or the page it was posted from,
    when that is on this site; else ``default``."""
    for candidate in (request.POST.get("next"), request.headers.get("Referer")):
        if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return candidate
    return default


class AppErrorMiddleware:
    """Console pages: an ``AppError`` a view let through becomes a message on the page the
    form came from (the change was refused, nothing was written: services roll back), or,
    for a GET, a plain page with the error's status. The API maps errors in its own
    exception handler (caisey/api.py) with the same statuses (caisey.errors.http_status)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        exc = app_error(exc)
        if exc is None or request.path.startswith("/api/"):
            return None
        if request.method == "POST":
            messages.error(request, str(exc))
            return HttpResponseRedirect(back_url(request))
        return HttpResponse(str(exc), status=http_status(exc), content_type="text/plain; charset=utf-8")
