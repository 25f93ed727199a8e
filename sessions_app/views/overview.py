"""The fleet overview: a technician's home (``selectors.overview.fleet_overview``)."""

from __future__ import annotations

from django.shortcuts import render

from caisey.console import member_required
from sessions_app.selectors.overview import fleet_overview as overview_of_fleet


@member_required
def fleet_overview(request):
    return render(request, "console/overview.html", {"overview": overview_of_fleet()})
