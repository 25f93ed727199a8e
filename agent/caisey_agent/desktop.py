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
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from caisey_agent import protocol as p

PIPE_PREFIX = r"\\.\pipe\caisey-prompts-"
# A user's SID: a local or domain account (S-1-5-21-...) or an Entra ID one (S-1-12-1-...); never a
# group or a well-known alias.
SID_PATTERN = re.compile(r"S-1-(5-21|12-1)(-\d+){3,}")
# One helper per session (Local\ is the session's namespace): the logon helper and one the service
# starts must not both wait for the session's single pipe instance.
HELPER_MUTEX = "Local\\CaiseyPromptHelper"
RECONNECT_DELAY = 3.0
MAX_MESSAGE = 64 * 1024
DIALOG_CLOSE_WAIT = 2.0  # a closed dialog's thread ends within a timer tick (250 ms)
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
    if not isinstance(msg, dict) or msg.get("type") not in ("hello", "prompt", "decision", "withdraw", "exit"):
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

    async def exit(self, reason: str) -> None:
        """Tell the helper to exit (the service stops: an upgrade or uninstall must not find the
        helper's ``pythonw.exe`` running from Program Files)."""
        self.writer.write(encode_message("exit", reason=reason))
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


def pipe_sddl(user_sid: str) -> str:
    """The pipe's security descriptor (SDDL): owned by SYSTEM; a protected DACL (nothing inherited)
    granting full access to SYSTEM and to the session's user and to nobody else: not Administrators,
    not other users, not the Everyone/Interactive groups. Anonymous and network clients are also
    refused by the pipe itself (PIPE_REJECT_REMOTE_CLIENTS)."""
    if not SID_PATTERN.fullmatch(user_sid):
        raise ValueError(f"not a user SID: {user_sid!r}")
    return f"O:SYG:SYD:P(A;;GA;;;SY)(A;;GA;;;{user_sid})"


def pipe_security_descriptor(user_sid):
    """SECURITY_ATTRIBUTES for :func:`create_pipe`, from :func:`pipe_sddl`."""
    import win32security

    sa = win32security.SECURITY_ATTRIBUTES()
    sa.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
        pipe_sddl(win32security.ConvertSidToStringSid(user_sid)), win32security.SDDL_REVISION_1
    )
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


def helper_command(python_exe: str, session_id: int | None = None) -> str:
    """The helper's command line: windowless ``pythonw.exe`` next to the service's ``python.exe``. The
    MSI's Run key holds the same without ``--session`` (the helper finds its own session)."""
    low = python_exe.lower()
    pythonw = python_exe[: -len("python.exe")] + "pythonw.exe" if low.endswith("\\python.exe") else python_exe
    return f'"{pythonw}" -B ' + " ".join(HELPER_ARGS) + (f" --session {session_id}" if session_id is not None else "")


def launch_helper(session_id: int, python_exe: str) -> int:
    """Start the helper in the user's session with the user's own token (the service runs as SYSTEM)."""
    import win32con
    import win32process
    import win32profile

    token = session_user_token(session_id)
    env = win32profile.CreateEnvironmentBlock(token, False)
    startup = win32process.STARTUPINFO()
    startup.lpDesktop = r"winsta0\default"
    _proc, _thread, pid, _tid = win32process.CreateProcessAsUser(
        token,
        None,
        helper_command(python_exe, session_id),
        None,
        None,
        False,
        win32con.CREATE_UNICODE_ENVIRONMENT | win32con.CREATE_NO_WINDOW,
        env,
        None,
        startup,
    )
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
            if exc.winerror in (109, 232, 233, 6, 995):  # broken, closing, no process, closed, aborted
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


class WindowsChannel:
    """One session's pipe, created by the service and waiting for the session's helper
    (:class:`caisey_agent.desktop_broker.Channel`)."""

    def __init__(self, session_id: int) -> None:
        import win32security

        self.session_id = session_id
        token = session_user_token(session_id)
        user_sid = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
        self.handle = create_pipe(session_id, user_sid)
        self.closed = False

    def _wait_for_client(self) -> None:
        """ConnectNamedPipe (overlapped), waited for in 1 s slices so that close() ends the wait."""
        import pywintypes
        import win32event
        import win32file
        import win32pipe

        overlapped = pywintypes.OVERLAPPED()
        overlapped.hEvent = win32event.CreateEvent(None, True, False, None)
        try:
            if win32pipe.ConnectNamedPipe(self.handle, overlapped) == 535:  # ERROR_PIPE_CONNECTED
                return
            while win32event.WaitForSingleObject(overlapped.hEvent, 1000) != win32event.WAIT_OBJECT_0:
                if self.closed:
                    win32file.CancelIo(self.handle)
                    raise ChannelError("closed")
            win32file.GetOverlappedResult(self.handle, overlapped, False)
        finally:
            overlapped.hEvent.Close()

    def _check_client(self) -> None:
        """The pipe's DACL admits only SYSTEM and the session's user; the client process must also be in
        this session (the same user logged on twice has two sessions and two helpers)."""
        import win32pipe
        import win32ts

        pid = win32pipe.GetNamedPipeClientProcessId(self.handle)
        session = win32ts.ProcessIdToSessionId(pid)
        if session != self.session_id:
            raise ChannelError(f"the client (pid {pid}) runs in session {session}, not {self.session_id}")

    async def accept(self):
        await asyncio.to_thread(self._wait_for_client)
        await asyncio.to_thread(self._check_client)
        stream = PipeStream(self.handle)
        return stream, stream

    def close(self) -> None:
        import win32file

        self.closed = True
        try:
            win32file.CloseHandle(self.handle)
        except Exception:  # noqa: BLE001 - closed already
            pass


class WindowsDesktopSessions:
    """:class:`caisey_agent.desktop_broker.DesktopSessions` on Windows: WTS, the pipe, the helper."""

    def active_sessions(self) -> list[dict]:
        return [s for s in logged_in_sessions() if s["state"] == "active"]

    def listen(self, session_id: int) -> WindowsChannel:
        try:
            return WindowsChannel(session_id)
        except Exception as exc:  # pywintypes.error: the session's token (logging off), the pipe
            raise OSError(str(exc)) from None

    def launch_helper(self, session_id: int) -> None:
        import sys

        try:
            launch_helper(session_id, sys.executable)
        except Exception as exc:  # pywintypes.error
            raise OSError(str(exc)) from None


def running_as_service() -> bool:
    """Session 0 is the services' session: there, prompts go to the users' sessions through helpers."""
    try:
        import win32ts

        return win32ts.ProcessIdToSessionId(os.getpid()) == 0
    except Exception:  # noqa: BLE001 - without pywin32 or WTS (Wine): no desktop helpers
        return False


def show_dialog(msg: dict, closed: threading.Event) -> bool | None:
    """A native, topmost Yes/No message box with a warning icon, in the calling thread (the helper gives
    each prompt its own). True approve, False deny, None closed: by the user, or by the helper when
    ``closed`` is set (the prompt was withdrawn, answered in another session, or the service told the
    helper to exit) or the prompt's deadline passed.

    Closing it: a Yes/No message box has no Cancel, so WM_CLOSE and Esc do nothing to it, and
    EndDialog belongs to the box's own thread. The box runs a modal message loop on this thread, which
    ends when it retrieves WM_QUIT (and posts it again for the caller): a thread timer
    (``SetTimer`` without a window, dispatched by that loop) checks ``closed`` and the deadline every
    250 ms and calls ``PostQuitMessage``; after the box returns, ``PeekMessage`` removes the re-posted
    WM_QUIT. This is Raymond Chen's "cheap timed MessageBox" (The Old New Thing, "Modality, part 7").
    Not seen on Windows yet (docs/windows.md, real-Windows list)."""
    import ctypes
    from ctypes import wintypes

    mb_yesno, mb_iconwarning, mb_topmost, mb_setforeground, mb_defbutton2 = 0x4, 0x30, 0x40000, 0x10000, 0x100
    wm_quit, pm_remove = 0x0012, 0x0001
    user32 = ctypes.windll.user32
    title, body = dialog_text(msg)
    deadline = float(msg.get("deadline") or 0)
    timerproc = ctypes.WINFUNCTYPE(None, wintypes.HWND, wintypes.UINT, ctypes.c_size_t, wintypes.DWORD)
    quit_posted = []

    def tick(_hwnd, _msg, _id, _time) -> None:
        if not quit_posted and dialog_should_close(closed, deadline):
            quit_posted.append(True)
            user32.PostQuitMessage(0)

    callback = timerproc(tick)  # kept referenced until KillTimer
    user32.SetTimer.restype = ctypes.c_size_t
    user32.SetTimer.argtypes = [wintypes.HWND, ctypes.c_size_t, wintypes.UINT, timerproc]
    timer = user32.SetTimer(None, 0, 250, callback)
    try:
        answer = user32.MessageBoxW(
            None, body, title, mb_yesno | mb_iconwarning | mb_topmost | mb_setforeground | mb_defbutton2
        )
    finally:
        user32.KillTimer(None, timer)
    quit_msg = wintypes.MSG()
    if user32.PeekMessageW(ctypes.byref(quit_msg), None, wm_quit, wm_quit, pm_remove) or quit_posted:
        return None  # closed by the helper: no answer
    return {6: True, 7: False}.get(answer)  # IDYES, IDNO


def dialog_should_close(closed: threading.Event, deadline: float, now=time.time) -> bool:
    """The dialog's timer asks this: withdrawn / answered elsewhere / helper exiting, or expired."""
    return closed.is_set() or (deadline > 0 and now() >= deadline)


# --- the helper (in the user's session) --------------------------------------------------------------


class Shown:
    """The dialogs a helper has open, one thread each, so that the channel is read while they are shown:
    a withdraw closes the prompt's dialog, an ``exit`` (the service stops) closes them all."""

    def __init__(self, write, ask) -> None:
        self.write, self.ask = write, ask
        self.lock = threading.Lock()  # one writer at a time on the channel
        self.open: dict[str, threading.Event] = {}
        self.threads: list[threading.Thread] = []

    def show(self, msg: dict) -> None:
        prompt_id = msg["prompt_id"]
        if prompt_id in self.open:
            return  # shown already (the service sends each prompt once per connection)
        closed = self.open[prompt_id] = threading.Event()
        thread = threading.Thread(target=self._ask, args=(msg, closed), name=f"prompt-{prompt_id[:8]}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _ask(self, msg: dict, closed: threading.Event) -> None:
        try:
            answer = self.ask(msg, closed)
            if answer is not None and not closed.is_set():
                with self.lock:
                    self.write(encode_message("decision", prompt_id=msg["prompt_id"], approve=answer))
        except OSError:
            pass  # the channel went away while the dialog was open: the service shows it again
        finally:
            self.open.pop(msg["prompt_id"], None)

    def withdraw(self, prompt_id: str) -> None:
        closed = self.open.get(prompt_id)
        if closed is not None:
            closed.set()

    def close_all(self, wait: float = DIALOG_CLOSE_WAIT) -> None:
        """Close every open dialog and wait (bounded) for their threads."""
        for closed in list(self.open.values()):
            closed.set()
        deadline = time.monotonic() + wait
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def serve_service(read, write, *, user: str, ask) -> bool:
    """One connection to the service: say hello as ``user``, then show each prompt with ``ask(msg,
    closed)`` (the dialog, in its own thread: True, False, or None when closed; it must return soon after
    the event ``closed`` is set) and send the answer. ``read()`` returns the next bytes (b"" at the end),
    ``write(data)`` sends. A withdraw closes that prompt's dialog (answered in another session, withdrawn
    by the server); ``exit`` closes them all and returns True: the helper exits. Returns False when the
    service closes the channel (its dialogs are closed too: the service shows what is still open again
    when the helper reconnects). Raises ChannelError on a message it does not understand.
    Platform-free: tested over a socket pair."""
    write(encode_message("hello", user=user))
    shown = Shown(write, ask)
    buffer = b""
    try:
        while True:
            chunk = read()
            if not chunk:
                return False
            buffer += chunk
            if len(buffer) > MAX_MESSAGE and b"\n" not in buffer:
                raise ChannelError("message too long")
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                msg = decode_message(line)
                if msg["type"] == "prompt":
                    shown.show(msg)
                elif msg["type"] == "withdraw" and isinstance(msg.get("prompt_id"), str):
                    shown.withdraw(msg["prompt_id"])
                elif msg["type"] == "exit":
                    return True
    finally:
        shown.close_all()


def run_helper(connect, *, user: str, ask, sleep=time.sleep, log=lambda line: None, stop=lambda: False) -> None:
    """The helper's life: connect to its session's channel (``connect()`` returns (read, write, close),
    or raises OSError while the service has no channel there: not installed yet, not started, between
    two helpers), serve it, and connect again when the service goes away (crashed, being restarted by the
    recovery actions), until ``stop()`` or until the service says ``exit`` (it is stopping: a service stop,
    an upgrade, an uninstall; the service starts a helper again when a prompt needs one, and the Run key
    at the next logon). Started at logon by the Run key, so it waits for the service rather than exiting."""
    while not stop():
        try:
            read, write, close = connect()
        except OSError as exc:
            log(f"no channel yet: {exc}")
            sleep(RECONNECT_DELAY)
            continue
        try:
            if serve_service(read, write, user=user, ask=ask):
                log("the service is stopping: exiting")
                return
            log("the service closed the channel")
        except (OSError, ChannelError) as exc:
            log(f"channel lost: {exc}")
        finally:
            close()
        sleep(RECONNECT_DELAY)


def _pipe_connect(session_id: int):
    """The helper's end of its session's pipe, opened overlapped: the dialogs' threads write decisions
    while the reading thread waits in ReadFile, and synchronous I/O on one handle is serialised (a
    write would wait for the service's next message)."""
    import pywintypes
    import win32file
    import win32pipe

    name = f"{PIPE_PREFIX}{session_id}"
    try:
        handle = win32file.CreateFile(
            name,
            win32file.GENERIC_READ | win32file.GENERIC_WRITE,
            0,
            None,
            win32file.OPEN_EXISTING,
            win32file.FILE_FLAG_OVERLAPPED,
            None,
        )
    except pywintypes.error as exc:
        if exc.winerror == 231:  # ERROR_PIPE_BUSY: another client is connecting; wait a little
            try:
                win32pipe.WaitNamedPipe(name, 2000)
            except pywintypes.error:
                pass
        raise OSError(exc.winerror, exc.strerror) from None
    stream = PipeStream(handle)  # its blocking _read/_write: one OVERLAPPED each, waited for
    return stream._read, stream._write, stream.close


def helper_processes(python_dir: str, processes=None) -> list:
    """The prompt helpers started from this installation, in any session: processes whose program is
    in ``python_dir`` (the installed python folder) and whose command line runs ``desktop-helper``.
    ``processes``: psutil.Process-like objects (default: psutil.process_iter)."""
    import psutil

    if processes is None:
        processes = psutil.process_iter()
    wanted = os.path.normcase(os.path.abspath(python_dir))
    found = []
    for proc in processes:
        try:
            exe, cmdline = proc.exe(), proc.cmdline()
        except (psutil.Error, OSError):
            continue  # gone, or not ours to read
        if not exe or os.path.normcase(os.path.dirname(os.path.abspath(exe))) != wanted:
            continue
        if any(arg == "desktop-helper" for arg in cmdline) and "--close-all" not in cmdline:
            found.append(proc)
    return found


def close_all_helpers(python_dir: str, processes=None, wait: float = 5.0) -> list[int]:
    """The installer's CloseHelpers action (after StopServices, before the files are removed or replaced):
    end the helpers that the stopping service could not reach over their pipe (a disconnected session's
    helper, whose channel the service no longer keeps; a helper of a version before the exit message).
    A helper holds nothing but its dialogs: ending it loses nothing, the prompt stays with the service.
    Returns the ended processes' ids."""
    import psutil

    helpers = helper_processes(python_dir, processes)
    for proc in helpers:
        try:
            proc.terminate()  # TerminateProcess on Windows
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(helpers, timeout=wait)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return [proc.pid for proc in helpers]


def helper_main(session_id: int | None = None) -> int:
    """The per-user helper (``caisey-agent desktop-helper``): started at logon by the MSI's Run key, or
    by the service in the user's session. One per session (a named mutex); logs to
    ``%LOCALAPPDATA%\\Caisey\\desktop-helper.log``."""
    import getpass

    import win32api
    import win32event
    import winerror

    if session_id is None:
        import win32ts

        session_id = win32ts.ProcessIdToSessionId(os.getpid())
    mutex = win32event.CreateMutex(None, False, HELPER_MUTEX)
    if win32api.GetLastError() == winerror.ERROR_ALREADY_EXISTS:
        return 0  # this session has its helper already
    folder = os.path.join(os.environ.get("LOCALAPPDATA") or os.path.expanduser("~"), "Caisey")
    os.makedirs(folder, exist_ok=True)

    def log(line: str) -> None:
        with open(os.path.join(folder, "desktop-helper.log"), "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} session {session_id}: {line}\n")

    log("started")
    try:
        run_helper(lambda: _pipe_connect(session_id), user=getpass.getuser(), ask=show_dialog, log=log)
    finally:
        mutex.Close()
    return 0
