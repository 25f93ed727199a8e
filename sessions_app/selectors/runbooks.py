"""Reads for runbooks: the list with each one's latest version, one runbook with its versions,
and the runs that named a version (batches in sessions, bulk runs)."""

from __future__ import annotations

from typing import Any

from django.db.models import Max, OuterRef, Subquery

from caisey_agent import protocol as p
from sessions_app.models import Batch, BulkRun, Runbook, RunbookVersion


def runbook_list() -> list[dict[str, Any]]:
    """Every runbook of the tenant with its latest version (two queries)."""
    latest = RunbookVersion.objects.filter(runbook=OuterRef("pk")).order_by("-number").values("pk")[:1]
    runbooks = list(Runbook.objects.annotate(latest_id=Subquery(latest), versions_n=Max("versions__number")))
    versions = RunbookVersion.objects.select_related("created_by").in_bulk([r.latest_id for r in runbooks])
    return [
        {"runbook": r, "latest": versions[r.latest_id], "steps": step_list(versions[r.latest_id])}
        for r in runbooks
        if r.latest_id in versions
    ]


def runbook_get(*, runbook_id: Any) -> Runbook:
    return Runbook.objects.select_related("created_by").get(pk=runbook_id)


def runbook_versions(*, runbook: Runbook) -> list[RunbookVersion]:
    return list(RunbookVersion.objects.filter(runbook=runbook).select_related("created_by").order_by("-number"))


def runbook_version_get(*, runbook: Runbook, number: int | None = None) -> RunbookVersion:
    """A version by number, else the latest."""
    versions = RunbookVersion.objects.filter(runbook=runbook).select_related("runbook", "created_by")
    if number is None:
        return versions.order_by("-number")[:1].get()
    return versions.get(number=number)


def step_list(version: RunbookVersion) -> list[dict[str, Any]]:
    """The steps as a page shows them: the catalogue's title and the parameters in words."""
    return [
        {
            "kind": step["kind"],
            "title": p.ACTION_KINDS[step["kind"]].title if step["kind"] in p.ACTION_KINDS else step["kind"],
            "params": step["params"],
            "params_text": ", ".join(f"{k}={v}" for k, v in step["params"].items()),
        }
        for step in version.steps
    ]


def runbook_runs(*, runbook: Runbook, limit: int = 50) -> dict[str, list]:
    """The latest runs of any version of the runbook: its bulk runs, and batches run on one endpoint."""
    return {
        "bulk_runs": list(
            BulkRun.objects.filter(runbook_version__runbook=runbook)
            .select_related("runbook_version", "created_by")
            .order_by("-created_at")[:limit]
        ),
        "batches": list(
            Batch.objects.filter(runbook_version__runbook=runbook, actions__bulk_run__isnull=True)
            .select_related("runbook_version", "created_by", "session", "session__endpoint")
            .distinct()
            .order_by("-created_at")[:limit]
        ),
    }
