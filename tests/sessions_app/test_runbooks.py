"""Runbooks: named, ordered catalogue actions, versioned (old versions kept, never changed), run
on one endpoint as a batch under one approval or across a client group as a bulk run; every run
records which version ran, in the transcript."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from caisey import tenancy
from caisey.errors import Conflict, Forbidden, Rejected
from caisey_agent import protocol as p
from endpoints.models import Endpoint
from sessions_app.forms.runbooks import steps_parse, steps_text
from sessions_app.models import (
    Action,
    ActionStatus,
    Batch,
    BulkRun,
    ImmutableRow,
    Prompt,
    Runbook,
    RunbookVersion,
    SupportSession,
    TranscriptEntry,
)
from sessions_app.selectors import bulk as bulk_selectors
from sessions_app.selectors import runbooks as selectors
from sessions_app.services import actions as action_services
from sessions_app.services import bulk, runbooks
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE = [
    {"kind": "dns_resolve", "params": {"name": "erp.acme.local"}},
    {"kind": "tcp_connect", "params": {"host": "erp.acme.local", "port": "443"}},
    {"kind": "system_summary", "params": {}},
]


@pytest.fixture
def world():
    tenant = factories.tenant()
    group = factories.client_group(tenant, name="Retail")
    endpoints = [factories.endpoint(group, hostname=f"till{n}").endpoint for n in range(3)]
    Endpoint.all_tenants.filter(pk__in=[e.pk for e in endpoints]).update(last_seen_at=timezone.now())
    return tenant, group, factories.technician(tenant), [Endpoint.all_tenants.get(pk=e.pk) for e in endpoints]


def test_a_runbook_is_validated_against_the_catalogue_and_coerced(world):
    tenant, group, tech, endpoints = world
    version = runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="ERP outage", steps=OUTAGE)
    assert version.number == 1 and [s["kind"] for s in version.steps] == [
        "dns_resolve",
        "tcp_connect",
        "system_summary",
    ]
    assert version.steps[1]["params"]["host"] == "erp.acme.local" and version.steps[1]["params"]["port"] == 443
    assert isinstance(version.steps[1]["params"]["port"], int)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([], "at least one step"),
        ([{"kind": "format_disk", "params": {}}], "step 1: no such action"),
        ([OUTAGE[0], {"kind": "tcp_connect", "params": {"host": "db", "port": "99999"}}], "step 2 \\(tcp_connect\\)"),
        ([{"kind": "system_summary", "params": {"bogus": 1}}], "unknown parameters: bogus"),
        ([OUTAGE[2]] * 21, "at most 20 steps"),
    ],
)
def test_bad_steps_are_refused_and_nothing_is_written(world, steps, message):
    tenant, group, tech, endpoints = world
    with pytest.raises(Rejected, match=message):
        runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="Broken", steps=steps)
    assert not Runbook.all_tenants.exists() and not RunbookVersion.all_tenants.exists()


def test_editing_writes_a_new_version_and_the_old_one_never_changes(world):
    tenant, group, tech, endpoints = world
    first = runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="ERP outage", steps=OUTAGE)
    second = runbooks.runbook_edit(
        actor=tech, runbook=first.runbook, name="ERP outage checklist", steps=OUTAGE[:1], description="short"
    )
    assert second.number == 2 and second.steps == [{"kind": "dns_resolve", "params": first.steps[0]["params"]}]
    first.refresh_from_db()
    assert first.number == 1 and len(first.steps) == 3 and first.name == "ERP outage"
    assert Runbook.all_tenants.get().name == "ERP outage checklist"
    first.steps = []
    with pytest.raises(ImmutableRow):
        first.save()
    with pytest.raises(ImmutableRow):
        first.delete()
    with tenancy.bind(tenant.pk):
        assert [v.number for v in selectors.runbook_versions(runbook=first.runbook)] == [2, 1]


def test_names_are_unique_in_a_tenant_and_viewers_cannot_write(world):
    tenant, group, tech, endpoints = world
    runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="ERP outage", steps=OUTAGE)
    with pytest.raises(Conflict):
        runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="erp OUTAGE", steps=OUTAGE)
    viewer = factories.member(tenant, role="viewer").user
    with pytest.raises(Rejected, match="technicians and admins"):
        runbooks.runbook_create(actor=viewer, tenant_id=tenant.pk, name="Other", steps=OUTAGE)
    # Another tenant may use the same name.
    other = factories.tenant()
    runbooks.runbook_create(actor=factories.technician(other), tenant_id=other.pk, name="ERP outage", steps=OUTAGE)


def test_a_run_on_one_endpoint_is_one_batch_and_the_transcript_names_the_version(world):
    tenant, group, tech, endpoints = world
    first = runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="ERP outage", steps=OUTAGE)
    runbooks.runbook_edit(actor=tech, runbook=first.runbook, name="ERP outage", steps=OUTAGE[::-1])
    batch = runbooks.runbook_run_endpoint(actor=tech, endpoint=endpoints[0], version=first)
    assert batch.runbook_version_id == first.pk
    steps = list(Action.all_tenants.filter(batch=batch).order_by("batch_position").values_list("kind", flat=True))
    assert steps == ["dns_resolve", "tcp_connect", "system_summary"]  # version 1's order, not version 2's
    entries = list(TranscriptEntry.all_tenants.filter(session_id=batch.session_id).order_by("index"))
    ran = next(e for e in entries if e.kind == "runbook.run")
    assert (
        ran.data["version"] == 1 and ran.data["runbook_version"] == str(first.pk) and ran.data["name"] == "ERP outage"
    )
    assert ran.data["steps"] == first.steps
    kinds = [e.kind for e in entries]
    assert kinds.index("runbook.run") < kinds.index("batch.queued")


def test_a_gated_runbook_asks_one_approval_for_all_its_steps(world):
    tenant, group, tech, endpoints = world
    factories.policy(group, requires="commands")
    steps = [OUTAGE[0], {"kind": "service_restart", "params": {"service": "Spooler"}}]
    version = runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="Printing", steps=steps)
    with pytest.raises(Forbidden, match="recent check"):
        runbooks.runbook_run_endpoint(actor=tech, endpoint=endpoints[0], version=version)
    from endpoints.access import StepUp

    batch = runbooks.runbook_run_endpoint(
        actor=tech, endpoint=endpoints[0], version=version, step_up=StepUp(method="password", at=1.0)
    )
    assert Prompt.all_tenants.filter(session_id=batch.session_id).count() == 1
    assert set(Action.all_tenants.filter(batch=batch).values_list("status", flat=True)) == {"awaiting_approval"}
    assert TranscriptEntry.all_tenants.filter(session_id=batch.session_id, kind="identity.step_up").exists()


def test_a_run_across_a_client_group_is_a_bulk_run_grouped_and_rerun_with_the_same_version(world):
    tenant, group, tech, endpoints = world
    version = runbooks.runbook_create(actor=tech, tenant_id=tenant.pk, name="ERP outage", steps=OUTAGE[:2])
    with tenancy.bind(tenant.pk):
        chosen = bulk_selectors.bulk_run_endpoints(client_group=group.slug)
    run = runbooks.runbook_run_bulk(actor=tech, endpoints=chosen, version=version, reason="INC-9")
    assert run.runbook_version_id == version.pk and run.kind == "runbook"
    assert Batch.all_tenants.filter(runbook_version=version).count() == 3
    for session_id in Action.all_tenants.filter(bulk_run=run).values_list("session_id", flat=True).distinct():
        entry = TranscriptEntry.all_tenants.get(session_id=session_id, kind="runbook.run")
        assert entry.data["bulk_run"] == str(run.pk) and entry.data["version"] == 1
    # till0 runs both steps fine; till1 fails its first step (the second never runs); till2 waits.
    by_host = {}
    for a in Action.all_tenants.filter(bulk_run=run).select_related("endpoint").order_by("batch_position"):
        by_host.setdefault(a.endpoint.hostname, []).append(a)
    for step in by_host["till0"]:
        action_services.action_result_receive(
            endpoint=step.endpoint,
            body=p.ActionResult(action_id=str(step.pk), status="succeeded", exit_code=0, result={"text": "ok"}),
        )
    action_services.action_result_receive(
        endpoint=by_host["till1"][0].endpoint,
        body=p.ActionResult(action_id=str(by_host["till1"][0].pk), status="failed", exit_code=2, error="NXDOMAIN"),
    )
    # till0's session closes once its last step ended (the endpoint rests), till1's is still running.
    assert SupportSession.all_tenants.get(pk=by_host["till0"][0].session_id).status == "closed"
    assert SupportSession.all_tenants.get(pk=by_host["till1"][0].session_id).status == "open"
    with tenancy.bind(tenant.pk):
        outcomes = bulk_selectors.bulk_run_outcomes(run=run)
    assert outcomes["summary"][:2] == ["1 same output", "1 failed"]
    assert [e["hostname"] for g in outcomes["groups"] if g["status"] == "failed" for e in g["endpoints"]] == ["till1"]
    again = bulk.bulk_run_rerun(actor=tech, run=run)
    assert again.rerun_of_id == run.pk and again.runbook_version_id == version.pk
    assert set(Action.all_tenants.filter(bulk_run=again).values_list("endpoint__hostname", flat=True)) == {"till1"}
    assert Action.all_tenants.filter(bulk_run=again).count() == 2  # both steps again
    assert ActionStatus.QUEUED in set(Action.all_tenants.filter(bulk_run=again).values_list("status", flat=True))


def test_step_lines_parse_and_print_back():
    text = 'dns_resolve name=erp.acme.local\n# a comment\n\nshell command="Get-Service spooler" shell=powershell'
    steps = steps_parse(text)
    assert steps == [
        {"kind": "dns_resolve", "params": {"name": "erp.acme.local"}},
        {"kind": "shell", "params": {"command": "Get-Service spooler", "shell": "powershell"}},
    ]
    assert steps_parse(steps_text(steps)) == steps
    with pytest.raises(Rejected, match="line 1: write each parameter as name=value"):
        steps_parse("dns_resolve erp.acme.local")
    with pytest.raises(Rejected, match="line 2"):
        steps_parse('system_summary\nshell command="unclosed')


def test_console_pages_create_edit_and_run(world):
    tenant, group, tech, endpoints = world
    client = Client()
    client.force_login(tech)
    response = client.post(
        reverse("console:runbook_create"),
        {"name": "ERP outage", "description": "", "steps": "dns_resolve name=erp.acme.local\nsystem_summary"},
    )
    runbook = Runbook.all_tenants.get()
    assert response.status_code == 302 and response.url == reverse("console:runbook_detail", args=[runbook.pk])
    page = client.get(reverse("console:runbook_list")).content.decode()
    assert "ERP outage" in page
    edit = client.get(reverse("console:runbook_edit", args=[runbook.pk])).content.decode()
    assert "dns_resolve name=erp.acme.local" in edit
    client.post(
        reverse("console:runbook_edit", args=[runbook.pk]),
        {"name": "ERP outage", "steps": "system_summary\nbogus_kind"},
        follow=True,
    )
    assert RunbookVersion.all_tenants.count() == 1  # refused: nothing written
    client.post(reverse("console:runbook_edit", args=[runbook.pk]), {"name": "ERP outage", "steps": "system_summary"})
    assert RunbookVersion.all_tenants.count() == 2
    detail = client.get(reverse("console:runbook_detail", args=[runbook.pk]) + "?version=1").content.decode()
    assert "version 1" in detail and "(the latest is 2)" in detail
    response = client.post(
        reverse("console:runbook_run", args=[runbook.pk]), {"version": "1", "endpoint": str(endpoints[0].pk)}
    )
    batch = Batch.all_tenants.get()
    assert batch.runbook_version.number == 1
    assert response.url == reverse("console:session_detail", args=[batch.session_id])
    response = client.post(reverse("console:runbook_run", args=[runbook.pk]), {"version": "2", "group": group.slug})
    run = BulkRun.all_tenants.get()
    assert run.runbook_version.number == 2 and response.url == reverse("console:bulk_detail", args=[run.pk])
    refused = client.post(reverse("console:runbook_run", args=[runbook.pk]), {"version": "2"}, follow=True)
    assert "choose one endpoint or one client group" in refused.content.decode()


def test_a_runbook_cannot_reach_another_tenants_endpoint_or_group(world):
    tenant, group, tech, endpoints = world
    version = factories.runbook(tenant, actor=tech)
    rival_group = factories.client_group(factories.tenant(), name="Rival")
    rival = factories.endpoint(rival_group, hostname="rival-host").endpoint
    client = Client()
    client.force_login(tech)
    url = reverse("console:runbook_run", args=[version.runbook_id])
    assert client.post(url, {"version": "1", "endpoint": str(rival.pk)}).status_code == 404
    page = client.post(url, {"version": "1", "group": rival_group.slug}, follow=True).content.decode()
    assert "no such client group" in page
    with pytest.raises(Rejected):
        runbooks.runbook_run_endpoint(actor=tech, endpoint=rival, version=version)
    assert not Batch.all_tenants.exists() and not BulkRun.all_tenants.exists()
