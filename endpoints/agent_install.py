"""How an endpoint gets the agent: the install lines shown with a new enrollment token, and the
Windows installer's download.

The lines name the token's secret, so they are shown where the secret is shown, once (the admin's
"add enrollment token" message), never stored. The MSI's property names are those of
``packaging/windows/make_wxs.py`` (SERVER_URL, ENROLL_TOKEN, CLIENT_GROUP).

The MSI is built by ``packaging/windows/build-msi`` (``build/windows/caisey-agent.msi``); the
server offers it for download only when ``CAISEY_WINDOWS_MSI_PATH`` names that file.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponseNotFound
from django.urls import reverse

MSI_NAME = "caisey-agent.msi"
MSI_BUILD = "packaging/windows/build-msi (output: build/windows/caisey-agent.msi)"


def server_url(request: HttpRequest) -> str:
    """The address agents enroll with: CAISEY_PUBLIC_URL when set, else the one the admin used."""
    return (settings.CAISEY_PUBLIC_URL or request.build_absolute_uri("/")).rstrip("/")


def msi_value(value: str) -> str:
    """A property value on msiexec's command line: quoted when it has a space or a quote."""
    if value and not any(c in value for c in ' "\t'):
        return value
    return '"' + value.replace('"', '""') + '"'


def linux_command(*, server: str, secret: str) -> str:
    return (
        f"sudo caisey-agent enroll --server {shlex.quote(server)} --token {shlex.quote(secret)} "
        "--state-dir /var/lib/caisey-agent"
    )


def windows_command(*, server: str, secret: str, client_group_slug: str) -> str:
    return (
        f"msiexec /i {MSI_NAME} /qn SERVER_URL={msi_value(server)} ENROLL_TOKEN={msi_value(secret)} "
        f"CLIENT_GROUP={msi_value(client_group_slug)}"
    )


def msi_configured() -> Path | None:
    """The Windows installer this server offers, or None when none is configured or the file is gone."""
    configured = getattr(settings, "CAISEY_WINDOWS_MSI_PATH", "")
    if not configured:
        return None
    path = Path(configured)
    return path if path.is_file() else None


def msi_where(request: HttpRequest) -> str:
    """Where to get the MSI, in words: the download address, or how to build it."""
    if msi_configured() is not None:
        return f"Windows installer: {request.build_absolute_uri(reverse('windows-msi'))}"
    return f"Windows installer: build it with {MSI_BUILD}; set CAISEY_WINDOWS_MSI_PATH to offer it here."


@login_required
def windows_msi(request: HttpRequest):
    """The configured MSI, to members and staff (it holds no secret: the token is a property given at install)."""
    if request.membership is None and not request.user.is_staff:
        raise PermissionDenied("your account is not a member of any tenant")
    path = msi_configured()
    if path is None:
        reason = (
            "the configured Windows installer file is missing on the server"
            if getattr(settings, "CAISEY_WINDOWS_MSI_PATH", "")
            else "this server offers no Windows installer (CAISEY_WINDOWS_MSI_PATH is not set)"
        )
        return HttpResponseNotFound(
            f"No {MSI_NAME} here: {reason}. Build it with {MSI_BUILD}.\n", content_type="text/plain; charset=utf-8"
        )
    return FileResponse(path.open("rb"), as_attachment=True, filename=MSI_NAME, content_type="application/x-msi")
