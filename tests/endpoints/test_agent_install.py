"""The enrollment page (the admin's "add enrollment token") gives the install lines for Linux and
Windows with the new secret, once; the Windows installer's download when one is configured."""

from __future__ import annotations

import html
import re
import shlex
from datetime import timedelta

import pytest
from django.utils import timezone

from endpoints import agent_install, services
from endpoints.models import EnrollmentToken, Role
from tests import factories

pytestmark = pytest.mark.django_db
MAKE_WXS = open("packaging/windows/make_wxs.py", encoding="utf-8").read()


@pytest.fixture
def group():
    return factories.client_group(factories.tenant("Acme MSP"), name="Contoso")


@pytest.fixture
def tenant_admin(client, group):
    client.force_login(factories.member(group.tenant, role=Role.ADMIN).user)
    return client


def add_token(client, group):
    expires = timezone.localtime(timezone.now() + timedelta(days=2))
    response = client.post(
        "/admin/endpoints/enrollmenttoken/add/",
        {
            "client_group": str(group.pk),
            "note": "laptops",
            "max_uses": "5",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
        },
        follow=True,
    )
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_new_token_shows_the_linux_and_msiexec_lines_once(tenant_admin, group, settings):
    settings.CAISEY_PUBLIC_URL = "https://caisey.example.com/"
    settings.CAISEY_WINDOWS_MSI_PATH = ""
    page = add_token(tenant_admin, group)
    secret = re.search(r"shown once, copy it now\): (cet_[A-Za-z0-9_-]+)", page).group(1)
    token = EnrollmentToken.all_tenants.get(prefix=secret[:8])
    assert token.client_group == group and token.max_uses == 5

    assert (
        f"Linux: sudo caisey-agent enroll --server https://caisey.example.com --token {secret} "
        "--state-dir /var/lib/caisey-agent"
    ) in page
    msiexec = re.search(r"Windows: (msiexec [^<\n]+)", page).group(1).strip()
    assert msiexec == (
        f"msiexec /i caisey-agent.msi /qn SERVER_URL=https://caisey.example.com ENROLL_TOKEN={secret} "
        f"CLIENT_GROUP={group.slug}"
    )
    # Every property on the line is one the MSI really declares (make_wxs.py's PROPERTIES).
    for prop in re.findall(r" ([A-Z_]+)=", msiexec):
        assert f'("{prop}", ' in MAKE_WXS, prop
    assert "Windows installer: build it with packaging/windows/build-msi" in page
    assert "/downloads/caisey-agent.msi" not in page

    # The secret is not shown again: not in the list, not on the token's page, not on a reload.
    for path in (
        "/admin/endpoints/enrollmenttoken/",
        f"/admin/endpoints/enrollmenttoken/{token.pk}/change/",
        "/admin/endpoints/enrollmenttoken/",
    ):
        body = tenant_admin.get(path).content.decode()
        assert secret not in body and "msiexec" not in body, path


def test_the_secret_enrolls_through_the_shown_server_address(tenant_admin, group, settings):
    """The lines are real: the secret they carry is the token's (the server's address, without a
    public URL, is the one the admin used)."""
    settings.CAISEY_PUBLIC_URL = ""
    page = add_token(tenant_admin, group)
    linux = re.search(r"Linux: (sudo caisey-agent enroll [^<\n]+)", page).group(1).strip()
    argv = shlex.split(linux)
    assert argv[argv.index("--server") + 1] == "http://testserver"
    secret = argv[argv.index("--token") + 1]
    enrollment = services.endpoint_enroll(token_secret=secret, machine_id="m-1", hostname="pc-1")
    assert enrollment.endpoint.client_group_id == group.pk


def test_msi_download_when_configured(tenant_admin, group, settings, tmp_path):
    msi = tmp_path / "built.msi"
    msi.write_bytes(b"\xd0\xcf\x11\xe0 pretend MSI")
    settings.CAISEY_WINDOWS_MSI_PATH = str(msi)
    page = add_token(tenant_admin, group)
    assert "Windows installer: http://testserver/downloads/caisey-agent.msi" in page

    response = tenant_admin.get("/downloads/caisey-agent.msi")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == msi.read_bytes()
    assert 'filename="caisey-agent.msi"' in response["Content-Disposition"]


@pytest.mark.parametrize("configured", ["", "missing"])
def test_msi_download_absent_is_a_clear_404(tenant_admin, settings, tmp_path, configured):
    settings.CAISEY_WINDOWS_MSI_PATH = str(tmp_path / "nope.msi") if configured else ""
    response = tenant_admin.get("/downloads/caisey-agent.msi")
    assert response.status_code == 404
    body = response.content.decode()
    assert body.startswith("No caisey-agent.msi here: ")
    assert ("file is missing on the server" in body) == bool(configured)
    assert "packaging/windows/build-msi" in body
    assert str(tmp_path) not in body  # the server's paths are not told


def test_msi_download_needs_a_signed_in_member(client, group, settings, tmp_path):
    msi = tmp_path / "built.msi"
    msi.write_bytes(b"msi")
    settings.CAISEY_WINDOWS_MSI_PATH = str(msi)
    response = client.get("/downloads/caisey-agent.msi")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_msiexec_values_with_spaces_are_quoted():
    line = agent_install.windows_command(server="https://x.example", secret='a "b" c', client_group_slug="g")
    assert 'ENROLL_TOKEN="a ""b"" c"' in line
