"""Console pages for endpoints. The tenant is bound by TenantMiddleware; querysets are scoped."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import render

from endpoints import selectors
from endpoints.models import Endpoint
from endpoints.presence import presence_of


def member_required(view):
    """Signed in and a member of a tenant; anything else never reaches tenant data."""

    @login_required
    def wrapped(request, *args, **kwargs):
        if request.membership is None:
            raise PermissionDenied("your account is not a member of any tenant")
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


@member_required
def endpoint_list(request):
    query = request.GET.get("q", "").strip()
    group = request.GET.get("group", "").strip()
    endpoints = list(selectors.endpoint_list(query=query, client_group=group)[:500])
    rows = [{"endpoint": e, "presence": presence_of(e)} for e in endpoints]
    return render(
        request,
        "console/endpoint_list.html",
        {"rows": rows, "query": query, "group": group, "groups": selectors.client_group_list()},
    )


@member_required
def endpoint_detail(request, endpoint_id):
    try:
        endpoint = selectors.endpoint_get(endpoint_id=endpoint_id)
    except (Endpoint.DoesNotExist, ValidationError):
        raise Http404("no such endpoint") from None
    return render(
        request,
        "console/endpoint_detail.html",
        {"endpoint": endpoint, "presence": presence_of(endpoint), "context": endpoint.machine_context},
    )
