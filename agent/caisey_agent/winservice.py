"""The agent as a Windows service (pywin32), and ``caisey-agent service install|remove|status|run``.

The service's program is the bundled ``python.exe -m caisey_agent service run`` (not the
``caisey-agent.exe`` launcher: a launcher starts Python as a child process, and the Service
Control Manager only talks to the process it started). It runs as LocalSystem, starts at
boot, and is restarted by the SCM on failure (set by ``install`` and again by the service
itself on every start, so an MSI-installed service gets it too). It runs the same agent as
``caisey-agent run``; a service stop request stops it through the thread-safe stop hook.

First start after an MSI install: when the state folder holds no identity and the MSI left
``ServerUrl`` and ``EnrollToken`` under ``HKLM\\SOFTWARE\\Caisey\\Agent``, the service enrolls
with them and then deletes the token value (it is single-use and must not linger).

Everything that needs pywin32 is imported inside functions: this module imports anywhere,
and the CLI refuses plainly off Windows.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from caisey_agent import platforms

SERVICE_NAME = "CaiseyAgent"
DISPLAY_NAME = "Caisey Agent"
DESCRIPTION = "Caisey remote support agent: runs the diagnostics and commands your IT provider asks for."
REG_KEY = r"SOFTWARE\Caisey\Agent"
# restart after 5 s, 5 s, then 30 s; the failure count resets after a day
RESTART_DELAYS_MS = (5000, 5000, 30000)
RESET_PERIOD_S = 86400
EXIT_STOPPED = 3

log = logging.getLogger("caisey_agent.service")


class NotWindows(Exception):
    pass


def require_windows() -> None:
    if not platforms.is_windows():
        raise NotWindows("`caisey-agent service` manages the Windows service; on Linux use the systemd unit")


def service_command() -> str:
    """The service's command line: this Python, running the agent package's service host."""
    exe = sys.executable
    if exe.lower().endswith("pythonw.exe"):
        exe = exe[: -len("pythonw.exe")] + "python.exe"
    return f'"{exe}" -B -m caisey_agent service run'


# --- install / remove / status (hands-on use; the MSI does the same with ServiceInstall) ---------


def install(start: bool = True) -> str:
    require_windows()
    import win32service

    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        handle = win32service.CreateService(
            scm,
            SERVICE_NAME,
            DISPLAY_NAME,
            win32service.SERVICE_ALL_ACCESS,
            win32service.SERVICE_WIN32_OWN_PROCESS,
            win32service.SERVICE_AUTO_START,
            win32service.SERVICE_ERROR_NORMAL,
            service_command(),
            None,
            0,
            None,
            None,  # LocalSystem
            None,
        )
        try:
            win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_DESCRIPTION, DESCRIPTION)
            set_recovery(handle)
            if start:
                try:
                    win32service.StartService(handle, None)
                except win32service.error as exc:
                    if exc.winerror != 1053:  # ERROR_SERVICE_REQUEST_TIMEOUT: slow start (seen under Wine)
                        raise
                    return f"installed {SERVICE_NAME}; it was slow to start ({exc.strerror}): check `service status`"
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    return f"installed {SERVICE_NAME} ({service_command()})" + (", started" if start else "")


def set_recovery(handle) -> None:
    import win32service

    actions = [(win32service.SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS]
    win32service.ChangeServiceConfig2(
        handle,
        win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
        {"ResetPeriod": RESET_PERIOD_S, "RebootMsg": None, "Command": None, "Actions": actions},
    )
    try:  # also restart when the agent exits with an error code, not only when it crashes
        win32service.ChangeServiceConfig2(handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
    except (AttributeError, win32service.error):
        pass


def quote_own_path(handle) -> None:
    """An unquoted program path with spaces ("C:\\Program Files\\...") lets C:\\Program.exe run as SYSTEM.
    Some installers (Wine's msiexec at least) register it unquoted: the service corrects its own."""
    import win32service

    current = win32service.QueryServiceConfig(handle)[3]
    fixed = quoted_command(current)
    if fixed != current:
        win32service.ChangeServiceConfig(
            handle,
            win32service.SERVICE_NO_CHANGE,
            win32service.SERVICE_NO_CHANGE,
            win32service.SERVICE_NO_CHANGE,
            fixed,
            None,
            0,
            None,
            None,
            None,
            None,
        )
        log.warning("service program path was unquoted; corrected to %s", fixed)


def quoted_command(command: str) -> str:
    """Quote the program part of a service command line that has a space in its path."""
    if command.startswith('"'):
        return command
    low = command.lower()
    end = low.find(".exe")
    if end < 0:
        return command
    program = command[: end + 4]
    if " " not in program:
        return command
    return f'"{program}"{command[end + 4 :]}'


def remove() -> str:
    require_windows()
    import win32service
    import win32serviceutil

    try:
        win32serviceutil.StopService(SERVICE_NAME)
    except Exception:  # noqa: BLE001 - not running
        pass
    for _ in range(30):
        if query()["state"] in ("Stopped", "not installed"):
            break
        time.sleep(0.5)
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS)
        win32service.DeleteService(handle)
        win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    return f"removed {SERVICE_NAME}"


def query() -> dict:
    require_windows()
    import win32service

    from caisey_agent.diagnostics import winparse

    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
    try:
        try:
            handle = win32service.OpenService(
                scm, SERVICE_NAME, win32service.SERVICE_QUERY_STATUS | win32service.SERVICE_QUERY_CONFIG
            )
        except win32service.error:
            return {"service": SERVICE_NAME, "state": "not installed"}
        try:
            status = win32service.QueryServiceStatusEx(handle)
            config = win32service.QueryServiceConfig(handle)
        finally:
            win32service.CloseServiceHandle(handle)
    finally:
        win32service.CloseServiceHandle(scm)
    return {
        "service": SERVICE_NAME,
        "state": winparse.SERVICE_STATES.get(status["CurrentState"], status["CurrentState"]),
        "pid": status.get("ProcessId") or None,
        "start_type": winparse.START_TYPES.get(config[1], config[1]),
        "command": config[3],
        "account": config[7],
    }


# --- first-run enrollment from what the MSI left -------------------------------------------------


def read_install_settings() -> dict:
    """ServerUrl, EnrollToken, ClientGroup, CaBundle, ServerPin as the MSI wrote them (empty ones dropped)."""
    import winreg

    settings = {}
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, REG_KEY) as key:
            for name in ("ServerUrl", "EnrollToken", "ClientGroup", "CaBundle", "ServerPin"):
                try:
                    value = winreg.QueryValueEx(key, name)[0]
                except FileNotFoundError:
                    continue
                if value:
                    settings[name] = str(value).strip()
    except FileNotFoundError:
        pass
    return settings


def forget_token() -> None:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, REG_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.DeleteValue(key, "EnrollToken")
    except FileNotFoundError:
        pass


def server_fingerprint(url: str, timeout: float = 15) -> str:
    """SHA-256 of the server's TLS certificate (hex), for SERVER_PIN."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin is the check here
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def check_pin(url: str, pin: str, fingerprint=server_fingerprint) -> None:
    """Refuse to enroll when the server's certificate is not the pinned one (hex, colons allowed)."""
    want = pin.replace(":", "").replace(" ", "").lower()
    if urllib.parse.urlsplit(url).scheme != "https":
        raise ValueError(f"SERVER_PIN is set but {url} is not https")
    got = fingerprint(url)
    if got != want:
        raise ValueError(f"the server's certificate SHA-256 is {got}, not the pinned {want}: not enrolling")


def apply_settings(settings: dict) -> None:
    """CA_BUNDLE: trusted in addition to the Windows store, for enrollment and the agent's connection."""
    bundle = settings.get("CaBundle")
    if bundle:
        os.environ["SSL_CERT_FILE"] = bundle


def enroll_from_install(state, settings: dict | None = None) -> str:
    """Enroll when not enrolled yet and the installer left a server and a token. Returns what it did."""
    from caisey_agent.enroll import enroll

    if state.identity() is not None:
        return "already enrolled"
    settings = read_install_settings() if settings is None else settings
    apply_settings(settings)
    if not settings.get("ServerUrl") or not settings.get("EnrollToken"):
        return "not enrolled and no SERVER_URL/ENROLL_TOKEN from the installer"
    if settings.get("ServerPin"):
        check_pin(settings["ServerUrl"], settings["ServerPin"])
    identity = enroll(state=state, server=settings["ServerUrl"], token=settings["EnrollToken"])
    forget_token()
    return f"enrolled as endpoint {identity.endpoint_id} in {identity.client_group}"


# --- the service itself -----------------------------------------------------------------------------


def setup_logging(state_dir: Path) -> None:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(logs / "agent.log", maxBytes=5 * 2**20, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.environ.get("CAISEY_AGENT_LOG_LEVEL", "INFO").upper())


def agent_main(stop_requested: threading.Event, set_stop) -> int:
    """The service's work: enroll if the installer asked, then run the agent until stopped.

    Not enrolled (yet): waits, retrying the enrollment every minute, so a service installed
    before its token arrives (or while the server is unreachable) needs no restart.
    """
    from caisey_agent import main
    from caisey_agent.runner import AgentStopped
    from caisey_agent.state import AgentState

    state_dir = main.default_state_dir()
    state = AgentState(state_dir)
    try:
        setup_logging(state_dir)
        log.info("service starting (state in %s)", state_dir)
        apply_settings(read_install_settings())
        while state.identity() is None:
            try:
                log.info("%s", enroll_from_install(state))
            except Exception as exc:  # noqa: BLE001 - keep the service up, say why
                log.error("enrollment from the installer's settings failed: %s", exc)
            if state.identity() is not None or stop_requested.wait(60):
                break
        if state.identity() is None:
            return 0
        try:
            return main.run(state, on_started=set_stop, console_signals=False)
        except AgentStopped as exc:
            log.error("stopping: %s", exc.reason)
            return EXIT_STOPPED
    finally:
        state.close()


def run_service() -> None:
    """Called as the service's program: hand this process to the Service Control Manager."""
    require_windows()
    import servicemanager
    import win32service
    import win32serviceutil

    class CaiseyAgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args):
            super().__init__(args)
            self.stop_requested = threading.Event()
            self.stop_agent = None

        def set_stop(self, stop) -> None:
            self.stop_agent = stop
            if self.stop_requested.is_set():
                stop()

        def SvcStop(self):  # noqa: N802 - pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self.stop_requested.set()
            if self.stop_agent is not None:
                self.stop_agent()

        def SvcDoRun(self):  # noqa: N802
            self.ReportServiceStatus(win32service.SERVICE_RUNNING)
            try:
                scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
                handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_CHANGE_CONFIG)
                set_recovery(handle)
                quote_own_path(handle)
                win32service.CloseServiceHandle(handle)
                win32service.CloseServiceHandle(scm)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not set the service's recovery actions: %s", exc)
            rc = agent_main(self.stop_requested, self.set_stop)
            if rc and not self.stop_requested.is_set():
                # A non-zero exit the SCM sees as a failure: its recovery actions restart the service,
                # except for EXIT_STOPPED (revoked), which must not be retried.
                if rc != EXIT_STOPPED:
                    os._exit(rc)

    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(CaiseyAgentService)
    servicemanager.StartServiceCtrlDispatcher()


def main(verb: str) -> int:
    try:
        if verb == "install":
            print(install())
        elif verb == "remove":
            print(remove())
        elif verb == "status":
            import json

            print(json.dumps(query(), indent=2))
        elif verb == "run":
            run_service()
        else:
            raise ValueError(verb)
    except NotWindows as exc:
        print(f"caisey-agent: {exc}", file=sys.stderr)
        return 2
    return 0
