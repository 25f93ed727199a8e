"""The Windows service module: importable and refusing plainly off Windows; its pure parts tested here."""

from __future__ import annotations

import sys

import pytest

from caisey_agent import cli, winservice
from caisey_agent.state import AgentState, Identity


def test_service_cli_refuses_off_windows(capsys):
    assert cli.main(["service", "status"]) == 2
    assert "manages the Windows service" in capsys.readouterr().err


def test_service_command_runs_this_python_not_a_launcher(monkeypatch):
    monkeypatch.setattr(sys, "executable", r"C:\Program Files\Caisey\python\pythonw.exe")
    assert winservice.service_command() == r'"C:\Program Files\Caisey\python\python.exe" -B -m caisey_agent service run'


def test_server_pin():
    fingerprint = "ab" * 32
    winservice.check_pin("https://caisey.example", ":".join(["AB"] * 32), fingerprint=lambda url: fingerprint)
    with pytest.raises(ValueError, match="not the pinned"):
        winservice.check_pin("https://caisey.example", "cd" * 32, fingerprint=lambda url: fingerprint)
    with pytest.raises(ValueError, match="not https"):
        winservice.check_pin("http://caisey.example", "ab" * 32, fingerprint=lambda url: fingerprint)


def test_first_run_without_installer_settings(tmp_path):
    state = AgentState(tmp_path / "s")
    try:
        assert winservice.enroll_from_install(state, {}) == (
            "not enrolled and no SERVER_URL/ENROLL_TOKEN from the installer"
        )
        state.save_identity(Identity(server="https://c", endpoint_id="e", credential="x", machine_id="m"))
        # An upgrade re-runs the installer with a token: the identity in the state folder is kept.
        assert winservice.enroll_from_install(state, {"ServerUrl": "https://c", "EnrollToken": "t"}) == (
            "already enrolled"
        )
    finally:
        state.close()


def test_ca_bundle_is_trusted_for_the_agents_connections(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    winservice.apply_settings({"CaBundle": r"C:\ProgramData\Caisey\ca.pem"})
    import os

    assert os.environ["SSL_CERT_FILE"] == r"C:\ProgramData\Caisey\ca.pem"


def test_unquoted_service_path_is_quoted():
    assert winservice.quoted_command(r"C:\Program Files\Caisey\python\python.exe -m caisey_agent service run") == (
        r'"C:\Program Files\Caisey\python\python.exe" -m caisey_agent service run'
    )
    already = r'"C:\Program Files\Caisey\python\python.exe" -m caisey_agent service run'
    assert winservice.quoted_command(already) == already
    assert winservice.quoted_command(r"C:\Caisey\python.exe -m x") == r"C:\Caisey\python.exe -m x"
