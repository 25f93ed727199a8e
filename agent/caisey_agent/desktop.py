"""Approval prompts on the Windows desktop: the service has no desktop, so a small helper runs in each
logged-in user's session, shows the prompt as a native dialog and reports the decision back.

Pieces:

- the message protocol (:func:`encode_message`, :func:`decode_message`, :class:`HelperLink`): JSON lines
  over any byte stream, tested on every platform over a socket pair;
- the channel: a named pipe per user session, ``\\\\.\\pipe\\caisey-prompts-<session id>``, whose DACL
  grants access to SYSTEM and to that session's user only (:func:`pipe_security_descriptor`), created
  by the service (:func:`create_pipe`);
- the helper, started by the service in the user's session with ``CreateProcessAsUser`` and the
  session's token (``WTSQueryUserToken``), the way a Windows service reaches its users: it connects to
  the pipe, shows each prompt with ``MessageBoxW`` (Yes = approve, No = deny), and answers;
- the presence report: which sessions have a user logged in (``WTSEnumerateSessions``), sent in the
  hello's machine context as ``user_logged_in`` (what ``allow_without_user`` decides on).

A decision is applied through the same :class:`~caisey_agent.prompts.PromptStore` as the CLI's
(``caisey-agent prompts approve``, which keeps working for administrators), recording which user decided.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from caisey_agent import protocol as p

PIPE_PREFIX = r"\\.\pipe\caisey-prompts-"
MAX_MESSAGE = 64 * 1024
DIALOG_TITLE = "Caisey approval request from {organisation}"
HELPER_ARGS = ["-m", "caisey_agent", "desktop-helper"]


class ChannelError(Exception):
    pass


# --- messages ----------------------------------------------------------------------------------


def encode_message(kind: str, **fields: Any) -> bytes:
    raw = json.dumps({"type": kind, **fields}, separators=(",", ":")).encode("utf-8") + b"\n"
    if len(raw) > MAX_MESSAGE:
        raise ChannelError(f"message of {len(raw)} bytes is too long")
    return raw


def decode_message(line: bytes) -> dict:
    if len(line) > MAX_MESSAGE:
        raise ChannelError("message too long")
    try:
        msg = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError(f"not a message: {exc}") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("hello", "prompt", "decision", "withdraw"):
        raise ChannelError(f"unknown message {msg!r:.100}")
    if msg["type"] == "decision":
        if not isinstance(msg.get("prompt_id"), str) or not isinstance(msg.get("approve"), bool):
            raise ChannelError("a decision needs prompt_id (string) and approve (true/false)")
    return msg


def prompt_message(held) -> bytes:
    return encode_message(
        "prompt",
        prompt_id=held.prompt_id,
        title=held.title,
        detail=held.detail,
        requested_by=held.requested_by,
        organisation=held.organisation,
        deadline=held.deadline,
    )


def dialog_text(msg: dict) -> tuple[str, str]:
    """(title, body) of the native dialog: organisation, technician and the exact command, unmistakably."""
    left = max(0, int(msg["deadline"] - time.time()))
    body = (
        f"{msg['organisation']} asks for your approval.\n\n"
        f"Technician: {msg['requested_by']}\n"
        f"Request: {msg['title']}\n\n"
        f"Exact command or action:\n{msg['detail']}\n\n"
        f"Approve? (Yes approves, No denies; the request expires in {left // 60} min {left % 60} s.)\n"
        f"Only approve if you expect this from {msg['organisation']}."
    )
    return p.visible(DIALOG_TITLE.format(organisation=msg["organisation"])), p.visible(body)  # controls shown


@dataclass
class Decision:
    prompt_id: str
    approve: bool
    user: str


class HelperLink:
    """The service's end of one helper's connection (any object with ``read``-line/``write`` semantics
    wrapped as an asyncio StreamReader/StreamWriter pair)."""

    def __init__(self, reader, writer, *, expected_user: str = "") -> None:
        self.reader, self.writer = reader, writer
        self.user = ""
        self.expected_user = expected_user

    async def handshake(self) -> str:
        msg = decode_message(await self.reader.readline())
        if msg["type"] != "hello" or not isinstance(msg.get("user"), str):
            raise ChannelError("the helper must say hello with its user first")
        if self.expected_user and msg["user"].lower() != self.expected_user.lower():
            raise ChannelError(f"helper says it is {msg['user']!r}, the session's user is {self.expected_user!r}")
        self.user = msg["user"]
        return self.user

    async def show(self, held) -> None:
        self.writer.write(prompt_message(held))
        await self.writer.drain()

    async def withdraw(self, prompt_id: str) -> None:
        self.writer.write(encode_message("withdraw", prompt_id=prompt_id))
        await self.writer.drain()

    async def next_decision(self) -> Decision | None:
        line = await self.reader.readline()
        if not line:
            return None
        msg = decode_message(line)
        if msg["type"] != "decision":
            raise ChannelError(f"expected a decision, got {msg['type']}")
        return Decision(prompt_id=msg["prompt_id"], approve=msg["approve"], user=self.user)


def apply_decision(store, decision: Decision, open_ids: set[str]):
    """Apply a helper's answer: only for a prompt that was shown to it and is still open."""
    from caisey_agent.prompts import PromptRefused

    if decision.prompt_id not in open_ids:
        raise PromptRefused(f"prompt {decision.prompt_id[:8]} was not shown to this user")
    return store.decide(decision.prompt_id, approve=decision.approve, by=f"desktop:{decision.user}")


# --- Windows: sessions, the pipe's security, the helper process, the dialog -------------------------


def logged_in_sessions() -> list[dict]:
    """Active sessions with a user (console or RDP): [{session_id, user, domain, state}]."""
    import win32ts

    sessions = []
    for s in win32ts.WTSEnumerateSessions(win32ts.WTS_CURRENT_SERVER_HANDLE):
        if s["State"] not in (win32ts.WTSActive, win32ts.WTSDisconnected):
            continue
        user = win32ts.WTSQuerySessionInformation(
            win32ts.WTS_CURRENT_SERVER_HANDLE, s["SessionId"], win32ts.WTSUserName
        )
        if not user:
            continue
        domain = win32ts.WTSQuerySessionInformation(
            win32ts.WTS_CURRENT_SERVER_HANDLE, s["SessionId"], win32ts.WTSDomainName
        )
        sessions.append(
            {
                "session_id": s["SessionId"],
                "user": user,
                "domain": domain,
                "state": "active" if s["State"] == win32ts.WTSActive else "disconnected",
            }
        )
    return sessions


def presence() -> dict:
    """What the hello reports: whether a user is logged in (and who), never failing the hello."""
    try:
        sessions = logged_in_sessions()
    except Exception as exc:  # noqa: BLE001 - no WTS (Wine, Server Core quirks): say unknown
        return {"user_logged_in": None, "presence_error": str(exc)[:200]}
    return {
        "user_logged_in": any(s["state"] == "active" for s in sessions),
        "interactive_users": sorted({f"{s['domain']}\\{s['user']}" for s in sessions}),
    }


def pipe_security_descriptor(user_sid):
    """SYSTEM and the session's user, full access; nobody else (not even other administrators' sessions)."""
    import ntsecuritycon
    import win32security

    system = win32security.CreateWellKnownSid(win32security.WinLocalSystemSid, None)
    dacl = win32security.ACL()
    for sid in (system, user_sid):
        dacl.AddAccessAllowedAce(win32security.ACL_REVISION, ntsecuritycon.GENERIC_ALL, sid)
    sd = win32security.SECURITY_DESCRIPTOR()
    sd.SetSecurityDescriptorDacl(True, dacl, False)
    sd.SetSecurityDescriptorOwner(system, False)
    sa = win32security.SECURITY_ATTRIBUTES()
    sa.SECURITY_DESCRIPTOR = sd
    return sa


def session_user_token(session_id: int):
    import win32ts

    return win32ts.WTSQueryUserToken(session_id)


def create_pipe(session_id: int, user_sid):
    import win32pipe

    return win32pipe.CreateNamedPipe(
        f"{PIPE_PREFIX}{session_id}",
        # FILE_FLAG_FIRST_PIPE_INSTANCE: no squatting; FILE_FLAG_OVERLAPPED: the service reads a
        # helper's decisions while it writes prompts (synchronous I/O on one handle is serialised).
        win32pipe.PIPE_ACCESS_DUPLEX | 0x00080000 | 0x40000000,
        win32pipe.PIPE_TYPE_BYTE | win32pipe.PIPE_READMODE_BYTE | win32pipe.PIPE_WAIT | 0x00000008,  # REJECT_REMOTE
        1,
        MAX_MESSAGE,
        MAX_MESSAGE,
        0,
        pipe_security_descriptor(user_sid),
    )


def launch_helper(session_id: int, python_exe: str) -> int:
    """Start the helper in the user's session with the user's own token (the service runs as SYSTEM)."""
    import win32con
    import win32process
    import win32profile
    import win32security

    token = session_user_token(session_id)
    env = win32profile.CreateEnvironmentBlock(token, False)
    startup = win32process.STARTUPINFO()
    startup.lpDesktop = r"winsta0\default"
    pythonw = python_exe[: -len("python.exe")] + "pythonw.exe" if python_exe.endswith("python.exe") else python_exe
    cmdline = f'"{pythonw}" ' + " ".join(HELPER_ARGS) + f" --session {session_id}"
    _proc, _thread, pid, _tid = win32process.CreateProcessAsUser(
        token,
        None,
        cmdline,
        None,
        None,
        False,
        win32con.CREATE_UNICODE_ENVIRONMENT | win32con.CREATE_NO_WINDOW,
        env,
        None,
        startup,
    )
    win32security.RevertToSelf()
    return pid


class PipeStream:
    """The service's end of a helper's pipe (an overlapped handle) as asyncio's stream methods:
    ``readline`` for :class:`HelperLink`'s reads, ``write``/``drain``/``close`` for its writes. Each
    blocking wait runs in a worker thread; reads and writes have their own OVERLAPPED."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.buffer = b""
        self.pending = b""

    def _wait(self, start) -> bytes:
        import pywintypes
        import win32event
        import win32file

        overlapped = pywintypes.OVERLAPPED()
        overlapped.hEvent = win32event.CreateEvent(None, True, False, None)
        try:
            buf = start(overlapped)
            n = win32file.GetOverlappedResult(self.handle, overlapped, True)
        except pywintypes.error as exc:
            if exc.winerror in (109, 232, 233):  # broken pipe, being closed, no process on the other end
                return b""
            raise OSError(exc.winerror, exc.strerror) from None
        finally:
            overlapped.hEvent.Close()
        return bytes(buf[:n]) if buf is not None else b""

    def _read(self) -> bytes:
        import win32file

        return self._wait(lambda ov: win32file.ReadFile(self.handle, win32file.AllocateReadBuffer(MAX_MESSAGE), ov)[1])

    def _write(self, data: bytes) -> None:
        import win32file

        def start(ov):
            win32file.WriteFile(self.handle, data, ov)

        self._wait(start)

    async def readline(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = await asyncio.to_thread(self._read)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE:
                raise ChannelError("message too long")
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line + b"\n"

    def write(self, data: bytes) -> None:
        self.pending += data

    async def drain(self) -> None:
        data, self.pending = self.pending, b""
        if data:
            await asyncio.to_thread(self._write, data)

    def close(self) -> None:
        import win32file

        try:
            win32file.CloseHandle(self.handle)
        except Exception:  # noqa: BLE001 - closed already
            pass


def wait_for_helper(handle, timeout: float) -> None:
    """ConnectNamedPipe on the overlapped handle, for at most ``timeout`` seconds."""
    import pywintypes
    import win32event
    import win32file
    import win32pipe

    overlapped = pywintypes.OVERLAPPED()
    overlapped.hEvent = win32event.CreateEvent(None, True, False, None)
    try:
        if win32pipe.ConnectNamedPipe(handle, overlapped) == 535:  # ERROR_PIPE_CONNECTED: it was quicker
            return
        if win32event.WaitForSingleObject(overlapped.hEvent, int(timeout * 1000)) != win32event.WAIT_OBJECT_0:
            win32file.CancelIo(handle)
            raise TimeoutError(f"the desktop helper did not connect within {timeout:.0f} s")
        win32file.GetOverlappedResult(handle, overlapped, False)
    finally:
        overlapped.hEvent.Close()


class WindowsDesktopSessions:
    """:class:`caisey_agent.desktop_broker.DesktopSessions` on Windows: WTS, the pipe, the helper."""

    def active_sessions(self) -> list[dict]:
        return [s for s in logged_in_sessions() if s["state"] == "active"]

    async def open_channel(self, session_id: int, *, timeout: float):
        import sys

        import win32file
        import win32security

        token = session_user_token(session_id)
        user_sid = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        handle = create_pipe(session_id, user_sid)
        try:
            launch_helper(session_id, sys.executable)
            await asyncio.to_thread(wait_for_helper, handle, timeout)
        except BaseException:
            win32file.CloseHandle(handle)
            raise
        stream = PipeStream(handle)
        return stream, stream


def running_as_service() -> bool:
    """Session 0 is the services' session: there, prompts go to the users' sessions through helpers."""
    try:
        import win32ts

        return win32ts.ProcessIdToSessionId(os.getpid()) == 0
    except Exception:  # noqa: BLE001 - without pywin32 or WTS (Wine): no desktop helpers
        return False


def show_dialog(msg: dict) -> bool | None:
    """A native, topmost Yes/No message box with a warning icon. True approve, False deny, None closed."""
    import ctypes

    mb_yesno, mb_iconwarning, mb_topmost, mb_setforeground, mb_defbutton2 = 0x4, 0x30, 0x40000, 0x10000, 0x100
    title, body = dialog_text(msg)
    answer = ctypes.windll.user32.MessageBoxW(
        None, body, title, mb_yesno | mb_iconwarning | mb_topmost | mb_setforeground | mb_defbutton2
    )
    return {6: True, 7: False}.get(answer)  # IDYES, IDNO


def helper_main(session_id: int) -> int:
    """The per-user helper: connect to this session's pipe, show prompts, answer."""
    import getpass

    import win32file

    handle = win32file.CreateFile(
        f"{PIPE_PREFIX}{session_id}",
        win32file.GENERIC_READ | win32file.GENERIC_WRITE,
        0,
        None,
        win32file.OPEN_EXISTING,
        0,
        None,
    )
    win32file.WriteFile(handle, encode_message("hello", user=getpass.getuser()))
    buffer = b""
    while True:
        _, chunk = win32file.ReadFile(handle, MAX_MESSAGE)
        if not chunk:
            return 0
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            msg = decode_message(line)
            if msg["type"] != "prompt":
                continue
            answer = show_dialog(msg)
            if answer is not None:
                win32file.WriteFile(handle, encode_message("decision", prompt_id=msg["prompt_id"], approve=answer))
