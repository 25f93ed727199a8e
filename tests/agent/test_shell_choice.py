"""The shell kind's ``shell`` parameter: sh by default off Windows, PowerShell by default on Windows,
cmd when the technician asks; recorded in the result; a PowerShell that runs nothing is an error."""

from __future__ import annotations

import pytest

from caisey_agent import actions, platforms
from caisey_agent import protocol as p
from caisey_agent.diagnostics import windows
from caisey_agent.policy import write_policy
from caisey_agent.state import AgentState
from tests.agent.test_actions import FakeAgent, run_action


@pytest.fixture
def agent(tmp_path):
    state = AgentState(tmp_path / "state")
    write_policy(state.dir, {"allow_shell": True})  # explicit, as the installer writes it
    yield FakeAgent(state)
    state.close()


def test_shell_param_is_validated():
    assert p.validate_params("shell", {"command": "ver"}) == {"command": "ver"}  # unchanged for old requests
    assert p.validate_params("shell", {"command": "ver", "shell": "cmd"})["shell"] == "cmd"
    with pytest.raises(p.ProtocolError, match="shell must be one of"):
        p.validate_params("shell", {"command": "ver", "shell": "bash"})


async def test_default_shell_on_linux_is_sh_and_recorded(agent):
    _, result = await run_action(agent, "shell", {"command": "echo $0"})
    assert result.status == "succeeded"
    assert result.result["data"]["shell"] == "sh"
    assert result.result["data"]["shell_program"] == "/bin/sh"


@pytest.mark.parametrize("shell", ["cmd", "powershell"])
async def test_windows_shells_are_refused_on_linux(agent, shell):
    _, result = await run_action(agent, "shell", {"command": "ver", "shell": shell})
    assert result.status == "refused"
    assert f"shell '{shell}' is only available on Windows endpoints" in result.error


def test_sh_is_refused_on_windows(monkeypatch):
    monkeypatch.setattr(platforms, "is_windows", lambda: True)
    assert actions.default_shell() == "powershell"
    assert "not available on this Windows endpoint" in actions.shell_refusal("sh")
    assert actions.shell_refusal("cmd") == "" and actions.shell_refusal("") == ""


def test_powershell_argv_is_encoded_and_writes_the_marker(monkeypatch):
    import base64

    monkeypatch.setattr(windows, "powershell_exe", lambda: r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe")
    argv = windows.shell_argv('Get-Service "Spooler" | Format-List', marker=r"C:\Windows\Temp\m.started")
    assert argv[:-1] == [
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        *windows.POWERSHELL_ARGS,
    ]
    script = base64.b64decode(argv[-1]).decode("utf-16-le")
    assert "[IO.File]::WriteAllText('C:\\Windows\\Temp\\m.started', 'started')" in script
    assert 'Get-Service "Spooler" | Format-List' in script
    assert windows.shell_argv('dir "C:\\Program Files"', "cmd") == 'dir "C:\\Program Files"'


async def test_a_powershell_that_runs_nothing_fails(agent, monkeypatch):
    # Wine's powershell.exe: exits 0, prints nothing, runs nothing (never writes the marker).
    monkeypatch.setattr(actions, "shell_refusal", lambda shell: "")
    monkeypatch.setattr(windows, "shell_argv", lambda command, shell="powershell", marker="": ["/bin/true"])
    _, result = await run_action(agent, "shell", {"command": "Get-Date", "shell": "powershell"})
    assert result.status == "failed"
    assert "without running the command" in result.error
    assert result.result["data"]["shell"] == "powershell"
    assert result.result["data"]["shell_ran_command"] is False


async def test_a_powershell_that_ran_succeeds(agent, monkeypatch):
    monkeypatch.setattr(actions, "shell_refusal", lambda shell: "")
    monkeypatch.setattr(
        windows,
        "shell_argv",
        lambda command, shell="powershell", marker="": ["/bin/sh", "-c", f": > '{marker}'; echo ran"],
    )
    aid, result = await run_action(agent, "shell", {"command": "Get-Date", "shell": "powershell"})
    assert result.status == "succeeded", result.error
    assert agent.stream(aid, "stdout") == "ran\n"
