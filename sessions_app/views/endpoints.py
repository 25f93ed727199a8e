"""Console pages for endpoints: the list with live connectivity, and one endpoint's page."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render

from bridge import health
from caisey.console import get_or_404, member_required
from caisey_agent.protocol import ACTION_KINDS
from endpoints import selectors as endpoint_selectors
from sessions_app.selectors import sessions as selectors

CHART_W, CHART_H = 480, 120


@member_required
def endpoint_list(request):
    query = request.GET.get("q", "").strip()
    group = request.GET.get("group", "").strip()
    endpoints = list(endpoint_selectors.endpoint_list(query=query, client_group=group)[:500])
    figures = health.health_for([e.pk for e in endpoints])
    rows = []
    for e in endpoints:
        connectivity = health.connectivity_of(e, figures[e.pk])
        rows.append(
            {"endpoint": e, "presence": connectivity.state.value, "connectivity": connectivity, "health": figures[e.pk]}
        )
    return render(
        request,
        "console/endpoint_list.html",
        {
            "rows": rows,
            "query": query,
            "group": group,
            "groups": endpoint_selectors.client_group_list(),
            "kinds": ACTION_KINDS.values(),
            "lazy_interval_s": settings.CAISEY["HEARTBEAT_LAZY_S"],
        },
    )


def latency_chart(series: list[dict]) -> dict:
    """Points for a small SVG line chart of p50/p95 delivery latency over the last hour."""
    peak = max([b["p95"] or 0 for b in series] + [1.0])
    step = CHART_W / max(1, len(series) - 1)

    def points(key: str) -> str:
        return " ".join(
            f"{i * step:.1f},{CHART_H - (b[key] / peak) * (CHART_H - 10):.1f}"
            for i, b in enumerate(series)
            if b[key] is not None
        )

    return {"w": CHART_W, "h": CHART_H, "p50": points("p50"), "p95": points("p95"), "peak": peak, "series": series}


@member_required
def endpoint_detail(request, endpoint_id):
    endpoint = get_or_404(endpoint_selectors.endpoint_get, endpoint_id=endpoint_id)
    figures = health.health_for([endpoint.pk])[endpoint.pk]
    connectivity = health.connectivity_of(endpoint, figures)
    return render(
        request,
        "console/endpoint_detail.html",
        {
            "endpoint": endpoint,
            "presence": connectivity.state.value,
            "connectivity": connectivity,
            "health": figures,
            "chart": latency_chart(health.latency_series(endpoint.pk)),
            "context": endpoint.machine_context,
            "sessions": selectors.session_list(endpoint_id=endpoint.pk)[:50],
        },
    )
