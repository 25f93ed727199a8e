"""A secret parameter end to end (issue 13): a technician's ldap_check with bind_dn and password, run by
a real agent process against a real OpenLDAP (slapd, LDAPS) through a real server. The password binds
(a wrong one is refused by slapd), and afterwards it is nowhere: not in the action, its outbox row, the
transcript, nor the agent's log."""

from __future__ import annotations

import json

import pytest

from tests.agent.test_ldap_check import BIND_DN, BIND_PASSWORD, slapd  # noqa: F401 - the slapd fixture
from tests.e2e import helpers as h
from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e

LEFTOVERS = (
    "import json; from bridge.models import OutboxMessage; from sessions_app.models import Action, TranscriptEntry;"
    "a = Action.all_tenants.get(pk='{action_id}');"
    "print(json.dumps({{'secrets': a.secrets, 'params': a.params,"
    " 'outbox': OutboxMessage.all_tenants.get(pk=a.outbox_id).body,"
    " 'transcript': [e.data for e in TranscriptEntry.all_tenants.filter(session_id=a.session_id)]}}))"
)


def final(stack, action_id: str) -> dict:
    return wait_for(
        lambda: (st := stack.json(h.action_state(action_id)))["status"] in ("succeeded", "failed", "timed_out") and st,
        timeout=60,
        interval=0.5,
        what=f"action {action_id} to finish",
    )


def test_an_authenticated_ldap_bind_with_a_password_that_is_then_gone(stack, slapd):  # noqa: F811
    stack.env["SSL_CERT_FILE"] = str(slapd["ca"])  # the agent trusts slapd's test CA (as CA_BUNDLE would)
    login = stack.seed()
    stack.django(h.set_policy("erp", "none"))
    agent = stack.enroll_agent(stack.port, stack.token("acme", "erp"), name="dc-check").start("--log-level", "debug")
    wait_for(lambda: "connected as" in agent.log_text(), timeout=30, what="agent connected")
    session = stack.json(h.open_session(login["username"], agent.endpoint_id))
    params = {"host": "localhost", "port": slapd["tls_port"], "tls": True, "bind_dn": BIND_DN}

    good = stack.json(h.run(login["username"], session, "ldap_check", {**params, "password": BIND_PASSWORD}))
    result = final(stack, good)
    assert result["status"] == "succeeded", result
    assert result["result"]["data"]["bind"]["as"] == BIND_DN and result["result"]["data"]["bind"]["code"] == 0

    wrong = stack.json(h.run(login["username"], session, "ldap_check", {**params, "password": "x" + BIND_PASSWORD}))
    result = final(stack, wrong)
    assert result["status"] == "failed" and "invalidCredentials" in result["error"], result

    for action_id in (good, wrong):
        left = stack.json(LEFTOVERS.format(action_id=action_id))
        assert left["secrets"] == {} and left["params"]["password"] == "•••"
        assert left["outbox"]["params"]["password"] == "•••"
        assert BIND_PASSWORD not in json.dumps(left, ensure_ascii=False)
    assert "ldap_check" in agent.log_text() and BIND_PASSWORD not in agent.log_text()
