"""Windows: %ProgramData%\\Caisey, an ACL set with the Windows API, DPAPI, console control events.

pywin32 (``win32security``, ``win32crypt``, ``win32api``) is imported inside the
methods that need it; the rest of this module runs anywhere, which is what the
tests on Linux use (they replace :meth:`WindowsPlatform._set_dacl`,
:meth:`_dpapi_protect` and :meth:`_dpapi_unprotect`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from collections.abc import Callable
from pathlib import Path

from caisey_agent.platforms.base import Platform

# wincrypt.h
CRYPTPROTECT_UI_FORBIDDEN = 0x1
CRYPTPROTECT_LOCAL_MACHINE = 0x4
DPAPI_PREFIX = "dpapi:"
DPAPI_DESCRIPTION = "Caisey agent credential"


class SecretUnavailable(Exception):
    """A protected secret that this machine cannot decrypt (copied from another machine?)."""


class WindowsPlatform(Platform):
    name = "windows"

    def default_state_dir(self) -> Path:
        return Path(common_app_data()) / "Caisey"

    def prepare_process(self) -> None:
        disable_platform_wmi()

    # --- the state folder's ACL ------------------------------------------------------------

    def secure_dir(self, path: Path) -> None:
        # Inherited by everything created inside, SQLite's -wal and -shm files included:
        # no per-file call, which is what failed with a sharing violation on the open -shm file.
        self._set_dacl(str(path), inherit=True)

    def secure_file(self, path: Path) -> None:
        """Nothing per file: the folder's protected, inheritable DACL covers every file in it."""

    def _set_dacl(self, path: str, *, inherit: bool) -> None:
        """A protected DACL (no inheritance from above): full control for SYSTEM, Administrators and,
        when the agent does not run as SYSTEM (a hands-on run with --state-dir), the running user."""
        import ntsecuritycon
        import win32api
        import win32security

        system = win32security.CreateWellKnownSid(win32security.WinLocalSystemSid, None)
        admins = win32security.CreateWellKnownSid(win32security.WinBuiltinAdministratorsSid, None)
        token = win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32security.TOKEN_QUERY)
        me = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        flags = (win32security.OBJECT_INHERIT_ACE | win32security.CONTAINER_INHERIT_ACE) if inherit else 0
        dacl = win32security.ACL()
        sids = [system, admins] + ([] if me in (system, admins) else [me])
        for sid in sids:
            dacl.AddAccessAllowedAceEx(win32security.ACL_REVISION, flags, ntsecuritycon.FILE_ALL_ACCESS, sid)
        win32security.SetNamedSecurityInfo(
            path,
            win32security.SE_FILE_OBJECT,
            win32security.DACL_SECURITY_INFORMATION | win32security.PROTECTED_DACL_SECURITY_INFORMATION,
            None,
            None,
            dacl,
            None,
        )

    # --- the credential: DPAPI, machine scope ------------------------------------------------

    def protect_secret(self, value: str) -> str:
        blob = self._dpapi_protect(value.encode("utf-8"))
        return DPAPI_PREFIX + base64.b64encode(blob).decode("ascii")

    def unprotect_secret(self, stored: str) -> str:
        if not stored.startswith(DPAPI_PREFIX):
            return stored  # written before DPAPI (or on another platform): still readable, protected on next save
        try:
            raw = self._dpapi_unprotect(base64.b64decode(stored[len(DPAPI_PREFIX) :]))
        except Exception as exc:  # noqa: BLE001 - pywin32 raises pywintypes.error
            raise SecretUnavailable(
                f"the stored credential cannot be decrypted on this machine ({exc}); re-enroll with --replace"
            ) from None
        return raw.decode("utf-8")

    def _dpapi_protect(self, data: bytes) -> bytes:
        import win32crypt

        # Machine scope: the service (SYSTEM) and an administrator's CLI both read it; the ACL
        # keeps other users from reading the file that holds it.
        return win32crypt.CryptProtectData(
            data, DPAPI_DESCRIPTION, None, None, None, CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN
        )

    def _dpapi_unprotect(self, blob: bytes) -> bytes:
        import win32crypt

        _description, data = win32crypt.CryptUnprotectData(blob, None, None, None, CRYPTPROTECT_UI_FORBIDDEN)
        return data

    # --- desktop prompts ------------------------------------------------------------------------

    def desktop_sessions(self):
        """As the service (session 0): the logged-in users' sessions, reached through helpers."""
        from caisey_agent import desktop

        return desktop.WindowsDesktopSessions() if desktop.running_as_service() else None

    # --- stopping -------------------------------------------------------------------------------

    def install_stop_handlers(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Callable[[], None]:
        """Ctrl-C and Ctrl-Break in a console (no loop.add_signal_handler on Windows event loops).

        The service stop request arrives through the service module, which calls the same ``stop``
        with ``loop.call_soon_threadsafe``.
        """
        wanted = [signal.SIGINT] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
        previous = {}

        def on_console(signum, frame) -> None:  # runs in the main thread, between bytecodes
            loop.call_soon_threadsafe(stop)

        for sig in wanted:
            previous[sig] = signal.signal(sig, on_console)

        def undo() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return undo


def common_app_data() -> str:
    """The ProgramData folder as the shell knows it (a service's environment may say otherwise: under
    Wine, a service sees ProgramData=C:\\users\\Public), falling back to the environment."""
    try:
        import ctypes

        buf = ctypes.create_unicode_buffer(260)
        if ctypes.windll.shell32.SHGetFolderPathW(None, 0x23, None, 0, buf) == 0 and buf.value:  # CSIDL_COMMON_APPDATA
            return buf.value
    except (AttributeError, OSError):
        pass
    return os.environ.get("ProgramData") or os.environ.get("ALLUSERSPROFILE") or r"C:\ProgramData"


def disable_platform_wmi() -> None:
    """The standard library's platform module asks WMI first (Python 3.12+) for the OS version and
    machine; a broken WMI crashes the process instead of raising (seen under Wine: platform.machine()
    aborts in propsys). Without WMI it uses sys.getwindowsversion() and the environment, as before 3.12."""
    import platform

    def no_wmi(*keys):
        raise OSError("WMI is not used by the Caisey agent")

    if hasattr(platform, "_wmi_query"):
        platform._wmi_query = no_wmi
