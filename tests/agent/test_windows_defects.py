"""The four defects seen when the agent first ran on Windows (under Wine), each driven on Linux
by simulating Windows: the missing os.geteuid, an event loop without add_signal_handler, an
empty PowerShell answer, and a state folder whose files cannot be chmod-ed."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading

import pytest

from caisey_agent import main, platforms
from caisey_agent.diagnostics import Context, logs, windows, winparse
from caisey_agent.platforms.posix import PosixPlatform
from caisey_agent.platforms.windows import DPAPI_PREFIX, SecretUnavailable, WindowsPlatform
from caisey_agent.policy import LocalPolicy
from caisey_agent.state import AgentState, Identity


class FakeWindows(WindowsPlatform):
    """The Windows platform with its three Windows API calls replaced by recorders."""

    def __init__(self) -> None:
        self.dacls: list[tuple[str, bool]] = []

    def _set_dacl(self, path: str, *, inherit: bool) -> None:
        self.dacls.append((path, inherit))

    def _dpapi_protect(self, data: bytes) -> bytes:
        return b"DPAPI" + bytes(b ^ 0x5A for b in data)

    def _dpapi_unprotect(self, blob: bytes) -> bytes:
        if not blob.startswith(b"DPAPI"):
            raise OSError("The data is invalid")
        return bytes(b ^ 0x5A for b in blob[5:])


@pytest.fixture
def windows_platform(monkeypatch):
    fake = FakeWindows()
    monkeypatch.setattr(sys, "platform", "win32")
    platforms.set_override(fake)
    yield fake
    platforms.set_override(None)


# --- 1. os.geteuid ----------------------------------------------------------------------


def test_default_state_dir_on_windows_needs_no_geteuid(monkeypatch):
    monkeypatch.delattr(os, "geteuid")
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delenv("CAISEY_AGENT_STATE_DIR", raising=False)
    monkeypatch.setenv("ProgramData", r"C:\ProgramData")
    assert str(main.default_state_dir()).replace("/", "\\") == r"C:\ProgramData\Caisey"
    monkeypatch.setenv("CAISEY_AGENT_STATE_DIR", "/elsewhere")
    assert str(main.default_state_dir()) == "/elsewhere"


def test_posix_default_state_dir_still_by_uid(monkeypatch):
    monkeypatch.delenv("CAISEY_AGENT_STATE_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert str(main.default_state_dir()) == "/var/lib/caisey-agent"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main.default_state_dir().parts[-3:] == (".local", "state", "caisey-agent")


# --- 2. loop.add_signal_handler ---------------------------------------------------------


class NoSignalsLoop(asyncio.SelectorEventLoop):
    """Like Windows' event loops: no add_signal_handler."""

    def add_signal_handler(self, sig, callback, *args):
        raise NotImplementedError


class FakeAgent:
    instances: list[FakeAgent] = []

    def __init__(self, state, **kw) -> None:
        self.stopping = asyncio.Event()
        FakeAgent.instances.append(self)

    def stop(self) -> None:
        self.stopping.set()

    async def run_forever(self) -> None:
        await self.stopping.wait()


def _run_with_loop(loop_factory, fn):
    policy = asyncio.get_event_loop_policy()

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self):
            return loop_factory()

    asyncio.set_event_loop_policy(Policy())
    try:
        return fn()
    finally:
        asyncio.set_event_loop_policy(policy)


def test_run_stops_on_ctrl_c_without_add_signal_handler(tmp_path, monkeypatch, windows_platform):
    monkeypatch.setattr(main, "Agent", FakeAgent)
    state = AgentState(tmp_path / "state", platform=windows_platform)
    # Ctrl-C in a console arrives as SIGINT on Windows; sent to the main thread once the agent runs
    # (Windows' proactor loop wakes on it through its wakeup fd; here the signal interrupts select()).
    started = threading.Event()
    main_thread = threading.main_thread().ident
    timer = threading.Thread(target=lambda: (started.wait(10), signal.pthread_kill(main_thread, signal.SIGINT)))
    timer.start()
    try:
        rc = _run_with_loop(NoSignalsLoop, lambda: main.run(state, on_started=lambda stop: started.set()))
    finally:
        timer.join()
        state.close()
    assert rc == 0
    assert FakeAgent.instances[-1].stopping.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler removed again


def test_service_stop_from_another_thread(tmp_path, monkeypatch, windows_platform):
    """What the Windows service's SvcStop does: call the stop function from its own thread."""
    monkeypatch.setattr(main, "Agent", FakeAgent)
    state = AgentState(tmp_path / "state", platform=windows_platform)

    def on_started(stop):
        threading.Timer(0.2, stop).start()

    try:
        rc = _run_with_loop(NoSignalsLoop, lambda: main.run(state, on_started=on_started, console_signals=False))
    finally:
        state.close()
    assert rc == 0 and FakeAgent.instances[-1].stopping.is_set()


# --- 3. an empty PowerShell answer ------------------------------------------------------------


def test_log_errors_reports_an_empty_powershell_answer(monkeypatch):
    # Wine's powershell.exe: exits 0 and prints nothing. /bin/true does exactly that.
    monkeypatch.setattr(logs, "IS_WINDOWS", True)
    monkeypatch.setattr(windows, "powershell_exe", lambda: "/bin/true")
    ctx = Context(params={"since_minutes": 60, "limit": 5}, policy=LocalPolicy())
    with pytest.raises(winparse.EmptyAnswer, match="without printing anything; an empty answer is not a result"):
        logs.log_errors(ctx)
    assert issubclass(winparse.EmptyAnswer, RuntimeError)  # the runner reports it as a failed action


def test_log_errors_parses_a_real_answer(monkeypatch):
    monkeypatch.setattr(logs, "IS_WINDOWS", True)
    answer = (
        '{"count":3,"entries":[{"time":"2024-05-02T08:01:02.0000000Z","level":"Error","provider":"Disk",'
        '"log":"System","id":7,"message":"The device, \\\\Device\\\\Harddisk0\\\\DR0, has a bad block."}]}'
    )
    monkeypatch.setattr(windows, "ps_json", lambda ctx, script, **kw: winparse.parse_ps_json(answer, "", 0, "x"))
    out = logs.log_errors(Context(params={"since_minutes": 60, "limit": 5}, policy=LocalPolicy()))
    assert out.data["count"] == 3
    assert out.data["entries"][0]["event_id"] == 7 and out.data["entries"][0]["identifier"] == "Disk"


# --- 4. chmod of the SQLite side files; the credential ------------------------------------------


def test_state_on_windows_uses_the_acl_not_chmod(tmp_path, monkeypatch, windows_platform):
    def sharing_violation(path, mode, *a, **kw):
        raise PermissionError(32, "The process cannot access the file because it is being used by another process")

    monkeypatch.setattr(os, "chmod", sharing_violation)
    folder = tmp_path / "Caisey"
    state = AgentState(folder, platform=windows_platform)
    state.save_identity(Identity(server="https://c.example", endpoint_id="e1", credential="s3cret", machine_id="m"))
    state.close()
    state = AgentState(folder, platform=windows_platform)  # reopened: -wal/-shm exist now
    try:
        assert windows_platform.dacls and all(d == (str(folder), True) for d in windows_platform.dacls)
        assert state.identity().credential == "s3cret"
    finally:
        state.close()
    stored = dict(sqlite3.connect(folder / AgentState.FILENAME).execute("SELECT key, value FROM identity"))
    assert stored["credential"].startswith(DPAPI_PREFIX)
    assert "s3cret" not in stored["credential"]


def test_plaintext_credential_from_before_dpapi_is_still_read(tmp_path, windows_platform):
    folder = tmp_path / "state"
    posix = AgentState(folder, platform=PosixPlatform())
    posix.save_identity(Identity(server="https://c", endpoint_id="e", credential="plain", machine_id="m"))
    posix.close()
    state = AgentState(folder, platform=windows_platform)
    try:
        assert state.identity().credential == "plain"
    finally:
        state.close()


def test_credential_from_another_machine_says_so(windows_platform):
    with pytest.raises(SecretUnavailable, match="re-enroll with --replace"):
        windows_platform.unprotect_secret(DPAPI_PREFIX + "bm90LW91cnM=")


def test_platform_module_never_asks_wmi_on_windows(monkeypatch):
    """platform.machine() crashed the agent under Wine (WMI); the agent turns WMI off for it."""
    import platform

    from caisey_agent.platforms import windows as win

    monkeypatch.setattr(platform, "_wmi_query", lambda *keys: pytest.fail("WMI queried"), raising=False)
    win.WindowsPlatform().prepare_process()
    with pytest.raises(OSError, match="WMI is not used"):
        platform._wmi_query("OS", "Version")


def test_state_dir_from_the_shell_not_the_service_environment(monkeypatch):
    from caisey_agent.platforms import windows as win

    monkeypatch.setattr(win, "common_app_data", lambda: r"C:\ProgramData")
    monkeypatch.setenv("ProgramData", r"C:\users\Public")  # what a Wine service sees
    assert str(win.WindowsPlatform().default_state_dir()).replace("/", "\\") == r"C:\ProgramData\Caisey"


def test_the_agent_runs_without_importing_cryptography():
    """cryptography's Rust extension does not load under Wine 8 (DLL load failed); transport.py importing
    it at the top stopped every command of the MSI-installed agent there, the installer's policy step
    included. Only a pinned key (transport.public_key_pin) and http_check of an unverified
    certificate need it, and import it then."""
    import subprocess

    code = (
        "import sys\n"
        "import caisey_agent.cli, caisey_agent.main, caisey_agent.enroll, caisey_agent.winservice\n"
        "import caisey_agent.desktop, caisey_agent.desktop_broker\n"
        "from caisey_agent.handlers import default_handlers\n"
        "default_handlers()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
