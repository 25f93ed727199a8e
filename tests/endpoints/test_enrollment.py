"""The enrollment exchange over HTTP: POST /api/agent/v1/enroll (JSON)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from caisey import secrets, tenancy
from caisey.actors import Party
from endpoints import services
from endpoints.models import Endpoint, EnrollmentToken
from sessions_app.models import TranscriptEntry
from sessions_app.services import sessions as session_services
from tests import factories

pytestmark = pytest.mark.django_db

URL = "/api/agent/v1/enroll"


def enroll(
    client, token: str, *, machine_id: str = "machine-0001-abcdef", hostname: str = "pc01", replace=None, **extra
):
    body = {"token": token, "machine_id": machine_id, "hostname": hostname}
    if replace is not None:
        body["replace"] = replace
    return client.post(URL, body, content_type="application/json", **extra)


def endpoint_count() -> int:
    return Endpoint.all_tenants.count()


def token_uses(token: EnrollmentToken) -> int:
    return EnrollmentToken.all_tenants.get(pk=token.pk).uses


@pytest.fixture
def group():
    return factories.client_group(factories.tenant("Acme MSP"), name="Contoso")


def test_happy_path_creates_the_endpoint_in_the_tokens_tenant_and_group(client, group):
    token, secret = factories.token(group)
    response = enroll(client, secret, hostname="contoso-pc01")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"endpoint_id", "credential", "tenant", "client_group", "bridge_path", "replaced"}
    assert body["tenant"] == "Acme MSP" and body["client_group"] == "Contoso"
    assert body["bridge_path"] == "/ws/agent/" and body["replaced"] is False

    endpoint = Endpoint.all_tenants.get(pk=body["endpoint_id"])
    assert endpoint.tenant_id == group.tenant_id
    assert endpoint.client_group_id == group.pk
    assert endpoint.hostname == "contoso-pc01"
    assert endpoint.machine_id == "machine-0001-abcdef"
    assert endpoint.enrolled_with_id == token.pk
    assert token_uses(token) == 1

    # The credential is returned once and only its hash is stored.
    credential = body["credential"]
    assert len(credential) >= 40
    assert endpoint.credential_hash == secrets.digest(credential)
    row = Endpoint.all_tenants.filter(pk=endpoint.pk).values().get()
    assert not any(credential in str(value) for value in row.values())
    assert services.endpoint_authenticate(endpoint_id=body["endpoint_id"], credential=credential).pk == endpoint.pk


def test_the_token_itself_is_stored_only_as_a_hash(group):
    token, secret = factories.token(group)
    row = EnrollmentToken.all_tenants.filter(pk=token.pk).values().get()
    assert row["token_hash"] == secrets.digest(secret)
    assert row["prefix"] == secret[:8]
    assert not any(secret in str(value) for value in row.values())


def test_expired_token_is_refused(client, group):
    token, secret = factories.token(group)
    EnrollmentToken.all_tenants.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = enroll(client, secret)
    assert response.status_code == 401
    assert response.json()["error"] == "token_expired"
    assert endpoint_count() == 0
    assert token_uses(token) == 0


def test_exhausted_token_is_refused(client, group):
    token, secret = factories.token(group, max_uses=2)
    assert enroll(client, secret, machine_id="machine-0001-aaaa").status_code == 201
    assert enroll(client, secret, machine_id="machine-0002-bbbb").status_code == 201
    response = enroll(client, secret, machine_id="machine-0003-cccc")
    assert response.status_code == 401
    assert response.json()["error"] == "token_exhausted"
    assert endpoint_count() == 2
    assert token_uses(token) == 2


def test_two_installers_racing_for_the_last_use_cannot_both_win(client, group):
    token, secret = factories.token(group, max_uses=1)
    first = enroll(client, secret, machine_id="machine-0001-aaaa", hostname="first")
    second = enroll(client, secret, machine_id="machine-0002-bbbb", hostname="second")
    assert sorted([first.status_code, second.status_code]) == [201, 401]
    assert second.json()["error"] == "token_exhausted"
    assert list(Endpoint.all_tenants.values_list("hostname", flat=True)) == ["first"]
    assert token_uses(token) == 1


def test_revoked_token_is_refused(client, group):
    token, secret = factories.token(group, max_uses=5)
    services.enrollment_token_revoke(actor=Party.SYSTEM, token=token)
    response = enroll(client, secret)
    assert response.status_code == 401
    assert response.json()["error"] == "token_revoked"
    assert endpoint_count() == 0
    assert token_uses(token) == 0


@pytest.mark.parametrize("wrong", ["cet_not-a-real-token", "", "x" * 200])
def test_wrong_token_is_refused(client, group, wrong):
    token, secret = factories.token(group)
    response = enroll(client, wrong)
    assert response.status_code in (400, 401)  # an empty token is a malformed request
    assert response.json()["error"] in ("invalid_token", "invalid_request")
    assert endpoint_count() == 0
    assert token_uses(token) == 0


def test_a_token_with_one_character_changed_is_refused(client, group):
    token, secret = factories.token(group)
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    response = enroll(client, forged)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert endpoint_count() == 0


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        "[]",
        '{"token": "t"}',
        '{"machine_id": "machine-0001-abcdef", "hostname": "pc01"}',
        '{"token": "TOKEN", "machine_id": "short", "hostname": "pc01"}',
        '{"token": "TOKEN", "machine_id": "has spaces in it!", "hostname": "pc01"}',
        '{"token": "TOKEN", "machine_id": "machine-0001-abcdef", "hostname": ""}',
        '{"token": "TOKEN", "machine_id": "machine-0001-abcdef", "hostname": "pc01", "replace": "perhaps"}',
    ],
)
def test_malformed_body_is_a_400_and_creates_nothing(client, group, body):
    token, secret = factories.token(group)
    response = client.post(URL, body.replace("TOKEN", secret), content_type="application/json")
    assert response.status_code == 400
    assert endpoint_count() == 0
    assert token_uses(token) == 0


def test_get_is_not_allowed(client):
    assert client.get(URL).status_code == 405


def test_same_machine_again_is_refused_without_replace(client, group):
    _, first_secret = factories.token(group)
    first = enroll(client, first_secret).json()
    token, secret = factories.token(group)

    response = enroll(client, secret)
    assert response.status_code == 409
    assert response.json()["error"] == "already_enrolled"
    assert "replace" in response.json()["detail"]
    assert endpoint_count() == 1
    # The refused attempt did not use the token up, and the old credential still works.
    assert token_uses(token) == 0
    services.endpoint_authenticate(endpoint_id=first["endpoint_id"], credential=first["credential"])


def test_same_machine_with_replace_rotates_the_credential_and_keeps_the_endpoint(client, group):
    _, first_secret = factories.token(group)
    first = enroll(client, first_secret, hostname="old-name").json()
    _, secret = factories.token(group)

    response = enroll(client, secret, hostname="new-name", replace=True)
    assert response.status_code == 200
    second = response.json()
    assert second["replaced"] is True
    assert second["endpoint_id"] == first["endpoint_id"]
    assert second["credential"] != first["credential"]
    assert second["client_group"] == "Contoso"

    assert endpoint_count() == 1
    endpoint = Endpoint.all_tenants.get()
    assert endpoint.hostname == "new-name" and endpoint.credential_rotated_at is not None
    with pytest.raises(services.AgentAuthError):
        services.endpoint_authenticate(endpoint_id=first["endpoint_id"], credential=first["credential"])
    assert (
        services.endpoint_authenticate(endpoint_id=second["endpoint_id"], credential=second["credential"]).pk
        == endpoint.pk
    )


def test_replace_with_a_token_of_another_client_group_is_refused_and_changes_nothing(client, group):
    """Was: any enrollment token of the tenant plus the machine id moved the endpoint to the
    token's client group (another approval policy) and took over its identity."""
    _, first_secret = factories.token(group)
    first = enroll(client, first_secret, hostname="old-name").json()
    other_token, other_secret = factories.token(factories.client_group(group.tenant, name="Fabrikam"))

    response = enroll(client, other_secret, hostname="new-name", replace=True)
    assert response.status_code == 403
    assert response.json()["error"] == "wrong_client_group" and "client group" in response.json()["detail"]
    endpoint = Endpoint.all_tenants.get(pk=first["endpoint_id"])
    assert endpoint.client_group_id == group.pk and endpoint.hostname == "old-name"
    assert endpoint.credential_rotated_at is None and token_uses(other_token) == 0
    assert services.endpoint_authenticate(endpoint_id=first["endpoint_id"], credential=first["credential"]).pk == (
        endpoint.pk
    )


def test_replace_is_recorded_in_the_endpoints_open_sessions(client, group):
    _, first_secret = factories.token(group)
    first = enroll(client, first_secret, hostname="old-name").json()
    endpoint = Endpoint.all_tenants.get(pk=first["endpoint_id"])
    with tenancy.bind(group.tenant_id):
        open_session = factories.support_session(endpoint)
        closed = factories.support_session(endpoint, reason="older ticket")
        session_services.session_close(actor=closed.opened_by, session=closed)
    _, secret = services.enrollment_token_issue(
        actor=Party.SYSTEM, client_group=group, expires_in=timedelta(hours=1), note="reinstall after disk swap"
    )

    assert enroll(client, secret, hostname="new-name", replace=True).status_code == 200
    entries = TranscriptEntry.all_tenants.filter(kind="endpoint.reenrolled")
    assert [e.session_id for e in entries] == [open_session.pk]
    assert entries[0].actor == "agent"
    assert entries[0].data["hostname"] == "new-name"
    assert entries[0].data["enrollment_token"] == "reinstall after disk swap"


def test_replace_of_a_revoked_endpoint_is_refused(client, group):
    _, first_secret = factories.token(group)
    first = enroll(client, first_secret).json()
    services.endpoint_revoke(
        actor=Party.SYSTEM, endpoint=Endpoint.all_tenants.get(pk=first["endpoint_id"]), reason="stolen"
    )
    _, secret = factories.token(group)
    response = enroll(client, secret, replace=True)
    assert response.status_code == 403
    assert response.json()["error"] == "endpoint_revoked"
    with pytest.raises(services.AgentAuthError):
        services.endpoint_authenticate(endpoint_id=first["endpoint_id"], credential=first["credential"])


def test_same_machine_id_in_another_tenant_is_a_separate_endpoint(client, group):
    other = factories.client_group(factories.tenant())
    _, secret_a = factories.token(group)
    _, secret_b = factories.token(other)
    a = enroll(client, secret_a)
    b = enroll(client, secret_b)
    assert a.status_code == b.status_code == 201
    assert a.json()["endpoint_id"] != b.json()["endpoint_id"]
    assert Endpoint.all_tenants.get(pk=b.json()["endpoint_id"]).tenant_id == other.tenant_id


def test_enrollment_attempts_are_rate_limited_per_address_and_token_prefix(client, group, settings):
    settings.CAISEY = {**settings.CAISEY, "RATE_ENROLL_PER_IP": (3, 60)}
    token, secret = factories.token(group, max_uses=10)
    statuses = [
        enroll(client, secret[:8] + "wrong", machine_id=f"machine-000{i}-aaaa", REMOTE_ADDR="203.0.113.7").status_code
        for i in range(3)
    ]
    assert statuses == [401, 401, 401]
    limited = enroll(client, secret, REMOTE_ADDR="203.0.113.7")  # the same address and token prefix
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert endpoint_count() == 0 and token_uses(token) == 0
    # Another address is counted on its own.
    assert enroll(client, secret, REMOTE_ADDR="198.51.100.9").status_code == 201


def test_guessing_enrollment_tokens_does_not_lock_out_a_real_token_from_the_same_address(client, group, settings):
    """One client guessing tokens behind a shared address exhausts only its own guesses' prefixes;
    the address as a whole has ten times the budget."""
    settings.CAISEY = {**settings.CAISEY, "RATE_ENROLL_PER_IP": (3, 60)}
    _, secret = factories.token(group)
    guesses = [
        enroll(client, f"cet_{i:04d}guess", machine_id=f"machine-{i:04d}-bbbb", REMOTE_ADDR="203.0.113.7").status_code
        for i in range(29)
    ]
    assert set(guesses) == {401}
    assert enroll(client, secret, REMOTE_ADDR="203.0.113.7").status_code == 201  # the 30th attempt of the address
    assert enroll(client, "cet_9999guess", REMOTE_ADDR="203.0.113.7").status_code == 429  # the address is spent


def test_a_simulated_token_marks_what_it_enrolls_simulated_and_an_ordinary_one_does_not(client, group):
    """The demo's fleet (caisey/demo_fleet.py) is marked at enrollment, by its token: the agent's
    request cannot claim it, and an ordinary token never sets it."""
    _, simulated = services.enrollment_token_issue(
        actor=Party.OPERATOR, client_group=group, expires_in=timedelta(minutes=5), simulated=True
    )
    _, ordinary = factories.token(group)
    sim = enroll(client, simulated, machine_id="simulated-pc01", hostname="pc01").json()
    # An agent saying it is simulated is not heard: the field is not part of the request.
    body = {"token": ordinary, "machine_id": "machine-real-0001", "hostname": "pc02", "simulated": True}
    real = client.post(URL, body, content_type="application/json").json()

    assert Endpoint.all_tenants.get(pk=sim["endpoint_id"]).simulated is True
    assert Endpoint.all_tenants.get(pk=real["endpoint_id"]).simulated is False
