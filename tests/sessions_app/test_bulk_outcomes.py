"""Bulk results a technician can act on: grouped by outcome (status, exit code, identical
normalised output) with counts, a re-run on the failures only, CSV and JSON exports."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from caisey import tenancy
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.models import Action, ActionStatus, BulkRun
from sessions_app.selectors import bulk as selectors
from sessions_app.services import actions as services
from sessions_app.services import bulk
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def result(action: Action, status: str = "succeeded", exit_code: int | None = 0, text: str = "", error: str = ""):
    services.action_result_receive(
        endpoint=action.endpoint,
        body=p.ActionResult(
            action_id=str(action.pk), status=status, exit_code=exit_code, result={"text": text}, error=error
        ),
    )


def undeliverable(action: Action) -> None:
    with tenancy.bind(action.tenant_id):
        Action.objects.filter(pk=action.pk).update(status=ActionStatus.FAILED_TO_DELIVER)


@pytest.fixture
def fleet():
    tenant = factories.tenant()
    group = factories.client_group(tenant, name="Retail")
    endpoints = [factories.endpoint(group, hostname=f"pos{n:02d}").endpoint for n in range(7)]
    Endpoint.all_tenants.filter(pk__in=[e.pk for e in endpoints[:6]]).update(last_seen_at=timezone.now())
    return tenant, factories.technician(tenant), [Endpoint.all_tenants.get(pk=e.pk) for e in endpoints]


def finished_run(fleet):
    """pos00-02 the same output (line endings and trailing spaces differ), pos03 another output,
    pos04 failed with exit code 1, pos05 undelivered, pos06 still waiting (offline)."""
    tenant, tech, endpoints = fleet
    run = bulk.bulk_run_start(actor=tech, endpoints=endpoints, kind="system_summary", params={}, reason="INC-1")
    rows = {a.endpoint.hostname: a for a in Action.all_tenants.filter(bulk_run=run).select_related("endpoint")}
    result(rows["pos00"], text="OS: Windows 11\nUptime: 3 days\n")
    result(rows["pos01"], text="OS: Windows 11\r\nUptime: 3 days   \r\n\r\n")
    result(rows["pos02"], text="OS: Windows 11\nUptime: 3 days")
    result(rows["pos03"], text="OS: Windows 10\nUptime: 40 days")
    result(rows["pos04"], status="failed", exit_code=1, error="WMI unavailable")
    undeliverable(rows["pos05"])
    return run, rows


def test_results_are_grouped_by_outcome_with_counts_and_a_summary(fleet):
    tenant, tech, endpoints = fleet
    run, rows = finished_run(fleet)
    with tenancy.bind(tenant.pk):
        outcomes = selectors.bulk_run_outcomes(run=run)
    assert outcomes["summary"] == ["3 same output", "1 differ", "1 failed", "1 undelivered", "1 waiting offline"]
    groups = outcomes["groups"]
    assert [g["count"] for g in groups] == [3, 1, 1, 1, 1]
    same = groups[0]
    assert same["status"] == "succeeded" and same["exit_code"] == 0
    assert sorted(e["hostname"] for e in same["endpoints"]) == ["pos00", "pos01", "pos02"]
    assert same["sample_output"].startswith("OS: Windows 11") and len(same["digest"]) == 16
    failed = next(g for g in groups if g["status"] == "failed")
    assert failed["exit_code"] == 1 and failed["rerunnable"] and failed["endpoints"][0]["error"] == "WMI unavailable"
    waiting = next(g for g in groups if g["status"] == "queued")
    assert not waiting["rerunnable"] and waiting["digest"] == ""  # no output compared before it ended
    wanted = {rows["pos04"].endpoint_id, rows["pos05"].endpoint_id}
    assert set(outcomes["rerun_endpoint_ids"]) == wanted


def test_normalised_output_ignores_line_endings_and_trailing_blanks_but_not_content():
    assert selectors.output_digest("a\r\nb  \r\n\r\n") == selectors.output_digest("a\nb")
    assert selectors.output_digest("a\nb") != selectors.output_digest("a\nc")
    assert selectors.output_digest("a\nb") != selectors.output_digest("a b")


def test_grouping_costs_the_same_queries_for_a_bigger_run(fleet):
    tenant, tech, endpoints = fleet
    small = bulk.bulk_run_start(actor=tech, endpoints=endpoints[:2], kind="system_summary", params={})
    big = bulk.bulk_run_start(actor=tech, endpoints=endpoints, kind="system_summary", params={})
    counts = []
    with tenancy.bind(tenant.pk):
        for run in (small, big):
            with CaptureQueriesContext(connection) as queries:
                selectors.bulk_run_outcomes(run=run)
            counts.append(len(queries))
    assert counts[0] == counts[1] <= 3, counts


def test_rerun_reaches_only_the_failed_and_undelivered_endpoints_and_links_the_original(fleet):
    tenant, tech, endpoints = fleet
    run, rows = finished_run(fleet)
    again = bulk.bulk_run_rerun(actor=tech, run=run)
    assert again.rerun_of_id == run.pk and again.kind == run.kind and again.params == run.params
    reached = set(Action.all_tenants.filter(bulk_run=again).values_list("endpoint__hostname", flat=True))
    assert reached == {"pos04", "pos05"}
    # Nothing failed in the re-run yet: a second re-run of it has nothing to do and changes nothing.
    before = BulkRun.all_tenants.count()
    with pytest.raises(Exception, match="nothing to re-run"):
        bulk.bulk_run_rerun(actor=tech, run=again)
    assert BulkRun.all_tenants.count() == before


def test_a_viewer_cannot_rerun(fleet):
    tenant, tech, endpoints = fleet
    run, rows = finished_run(fleet)
    viewer = factories.member(tenant, role="viewer").user
    with pytest.raises(Exception, match="technicians and admins"):
        bulk.bulk_run_rerun(actor=viewer, run=run)


def test_console_page_shows_groups_and_reruns_with_step_up(fleet):
    tenant, tech, endpoints = fleet
    run, rows = finished_run(fleet)
    client = Client()
    client.force_login(tech)
    page = client.get(reverse("console:bulk_detail", args=[run.pk])).content.decode()
    assert "3 same output, 1 differ, 1 failed, 1 undelivered, 1 waiting offline" in page
    assert "Re-run on the 2 failed, timed-out or undelivered endpoints" in page
    response = client.post(reverse("console:bulk_rerun", args=[run.pk]))
    again = BulkRun.all_tenants.get(rerun_of=run)
    assert response.status_code == 302 and response.url == reverse("console:bulk_detail", args=[again.pk])
    page = client.get(response.url).content.decode()
    assert "Re-run of the failures of" in page


def test_exports_csv_and_json_carry_every_row_and_its_outcome_group(fleet):
    tenant, tech, endpoints = fleet
    run, rows = finished_run(fleet)
    Action.all_tenants.filter(pk=rows["pos03"].pk).update(result={"text": '=HYPERLINK("http://x")'})
    client = Client()
    client.force_login(tech)
    response = client.get(reverse("console:bulk_export_csv", args=[run.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(table) == 7 and {r["hostname"] for r in table} == {f"pos{n:02d}" for n in range(7)}
    by_host = {r["hostname"]: r for r in table}
    assert by_host["pos00"]["outcome_group"] == by_host["pos01"]["outcome_group"] != by_host["pos04"]["outcome_group"]
    assert by_host["pos04"]["status"] == "failed" and by_host["pos04"]["exit_code"] == "1"
    assert by_host["pos03"]["output"].startswith("'=")  # a formula stays text in a spreadsheet
    data = json.loads(client.get(reverse("console:bulk_export_json", args=[run.pk])).content)
    assert data["summary"][0] == "3 same output" and len(data["rows"]) == 7
    assert sum(g["count"] for g in data["groups"]) == 7 and data["run"]["id"] == str(run.pk)


def test_progress_is_rung_as_actions_end(fleet, monkeypatch):
    tenant, tech, endpoints = fleet
    run = bulk.bulk_run_start(actor=tech, endpoints=endpoints[:2], kind="system_summary", params={})
    rung = []
    from bridge import notify

    monkeypatch.setattr(notify, "console_event", lambda **kw: rung.append(kw))
    first = Action.all_tenants.filter(bulk_run=run).order_by("endpoint__hostname").first()
    result(first, text="ok")
    progress = [kw["payload"] for kw in rung if kw["event"] == "bulk.progress"]
    assert progress == [{"bulk_run_id": str(run.pk), "total": 2, "done": 1, "waiting": 1, "woken": []}]


def test_a_commands_streamed_output_is_compared_not_its_timed_summary(fleet):
    tenant, tech, endpoints = fleet
    run = bulk.bulk_run_start(actor=tech, endpoints=endpoints[:3], kind="system_summary", params={})
    actions = list(Action.all_tenants.filter(bulk_run=run).select_related("endpoint").order_by("endpoint__hostname"))
    for n, (action, out) in enumerate(
        zip(actions, ["spooler running\n", "spooler running\r\n", "stopped\n"], strict=True)
    ):
        services.action_output_receive(
            endpoint=action.endpoint, body=p.ActionOutput(action_id=str(action.pk), seq=0, stream="stdout", data=out)
        )
        result(action, text=f"exit code 0 after 0.00{n} s; {len(out)} bytes on stdout")
    with tenancy.bind(tenant.pk):
        outcomes = selectors.bulk_run_outcomes(run=run)
    assert outcomes["summary"] == ["2 same output", "1 differ"]
    assert outcomes["groups"][0]["sample_output"].startswith("spooler running")
