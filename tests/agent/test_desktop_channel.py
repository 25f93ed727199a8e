"""The desktop prompt helper's channel: the messages between the service and a user's helper, over a
socket pair (the named pipe's stand-in on Linux), and how a decision is applied."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from caisey_agent import desktop
from caisey_agent import protocol as p
from caisey_agent.prompts import PromptRefused, PromptStore
from caisey_agent.state import AgentState


@pytest.fixture
def store(tmp_path):
    state = AgentState(tmp_path / "state")
    yield PromptStore(state.db)
    state.close()


def _show(prompt_id: str = "a" * 32) -> p.PromptShow:
    return p.PromptShow(
        prompt_id=prompt_id,
        title="Shell command",
        detail="shell command (cmd): net stop spooler",
        requested_by="tech@msp.example",
        organisation="Northwind IT",
        deadline=time.time() + 300,
    )


async def _pair():
    service_sock, helper_sock = socket.socketpair()
    service = await asyncio.open_connection(sock=service_sock)
    helper = await asyncio.open_connection(sock=helper_sock)
    return service, helper


async def test_prompt_and_decision_round_trip(store):
    store.store(_show())
    held = store.find("a" * 32)
    (s_reader, s_writer), (h_reader, h_writer) = await _pair()
    link = desktop.HelperLink(s_reader, s_writer, expected_user="alice")
    h_writer.write(desktop.encode_message("hello", user="ALICE"))
    assert await link.handshake() == "ALICE"

    await link.show(held)
    shown = desktop.decode_message(await h_reader.readline())
    assert shown["type"] == "prompt" and shown["detail"] == "shell command (cmd): net stop spooler"
    title, body = desktop.dialog_text(shown)
    assert title == "Caisey approval request from Northwind IT"
    assert "Technician: tech@msp.example" in body and "net stop spooler" in body

    h_writer.write(desktop.encode_message("decision", prompt_id=held.prompt_id, approve=True))
    decision = await link.next_decision()
    assert decision == desktop.Decision(prompt_id=held.prompt_id, approve=True, user="ALICE")
    decided = desktop.apply_decision(store, decision, {held.prompt_id})
    assert decided.state == "approved" and decided.decided_by == "desktop:ALICE"

    h_writer.close()
    assert await link.next_decision() is None  # the helper went away (user logged off)
    s_writer.close()


async def test_a_helper_of_another_user_is_refused():
    (s_reader, s_writer), (_, h_writer) = await _pair()
    link = desktop.HelperLink(s_reader, s_writer, expected_user="alice")
    h_writer.write(desktop.encode_message("hello", user="mallory"))
    with pytest.raises(desktop.ChannelError, match="session's user is 'alice'"):
        await link.handshake()
    for w in (s_writer, h_writer):
        w.close()


def test_a_decision_for_a_prompt_not_shown_is_refused(store):
    store.store(_show("b" * 32))
    with pytest.raises(PromptRefused, match="not shown to this user"):
        desktop.apply_decision(store, desktop.Decision("b" * 32, True, "bob"), open_ids=set())
    assert store.find("b" * 32).state == "delivered"


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"not json\n", "not a message"),
        (b'{"type": "shell", "command": "x"}\n', "unknown message"),
        (b'{"type": "decision", "prompt_id": "x", "approve": "yes"}\n', "approve"),
        (b"x" * (desktop.MAX_MESSAGE + 1), "too long"),
    ],
)
def test_bad_messages(raw, why):
    with pytest.raises(desktop.ChannelError, match=why):
        desktop.decode_message(raw)


def test_presence_off_windows_never_breaks_the_hello():
    from caisey_agent import machine

    assert machine.context()["user_logged_in"] in (True, False, None)


# --- the helper's side (desktop.serve_service / run_helper), over a socket pair --------------------


def _sock_io(sock: socket.socket):
    return (lambda: sock.recv(65536)), sock.sendall


def _messages(sock: socket.socket, count: int) -> list[dict]:
    """The next ``count`` messages the helper sent (blocking reads on the service's end)."""
    received = b""
    while received.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, "the helper closed the channel early"
        received += chunk
    return [desktop.decode_message(line) for line in received.splitlines()]


def _serve_in_thread(helper: socket.socket, ask) -> tuple[threading.Thread, list]:
    result: list = []
    read, write = _sock_io(helper)
    thread = threading.Thread(target=lambda: result.append(desktop.serve_service(read, write, user="alice", ask=ask)))
    thread.start()
    return thread, result


def test_the_helper_says_hello_shows_each_prompt_and_answers():
    service, helper = socket.socketpair()
    shown: list[dict] = []
    answers = {"a": True, "b": None, "c": False}  # Yes, dialog closed by the user, No

    def ask(msg, closed):
        shown.append(msg)
        return answers[msg["prompt_id"][0]]

    thread, result = _serve_in_thread(helper, ask)
    for show in [_show(c * 32) for c in "abc"]:
        service.sendall(desktop.prompt_message(show))
    msgs = _messages(service, 3)
    service.shutdown(socket.SHUT_WR)  # the service closes: the helper's serve returns False
    thread.join(10)
    assert result == [False]
    assert msgs[0] == {"type": "hello", "user": "alice"}
    # each dialog in its own thread: the answers arrive in any order
    assert sorted((m["prompt_id"][0], m["approve"]) for m in msgs[1:]) == [("a", True), ("c", False)]
    assert [m["detail"] for m in shown] == ["shell command (cmd): net stop spooler"] * 3
    assert desktop.dialog_text(shown[0])[0] == "Caisey approval request from Northwind IT"
    service.close()
    helper.close()


def test_a_withdraw_closes_the_prompts_dialog_while_the_others_stay():
    """Withdrawn by the server or answered in another session: the helper closes the dialog it shows
    (the Windows dialog: desktop.show_dialog's timer sees the event) and sends no answer for it."""
    service, helper = socket.socketpair()
    asked = {c: threading.Event() for c in "ab"}
    closed_seen: dict[str, bool] = {}

    def ask(msg, closed):
        key = msg["prompt_id"][0]
        asked[key].set()
        if key == "a":  # the user does not answer: the dialog stays until the helper closes it
            closed_seen[key] = closed.wait(10)
            return True  # a click racing the close is not sent either
        return False

    thread, result = _serve_in_thread(helper, ask)
    service.sendall(desktop.prompt_message(_show("a" * 32)))
    assert asked["a"].wait(10)
    service.sendall(desktop.encode_message("withdraw", prompt_id="a" * 32))
    service.sendall(desktop.prompt_message(_show("b" * 32)))
    msgs = _messages(service, 2)
    assert asked["b"].is_set() and msgs[1] == {"type": "decision", "prompt_id": "b" * 32, "approve": False}
    service.sendall(desktop.encode_message("exit", reason="the service is stopping"))
    thread.join(10)
    assert result == [True] and closed_seen == {"a": True}
    helper.close()  # what the helper's run_helper does after the exit
    assert service.recv(65536) == b""  # nothing was sent for the withdrawn prompt
    service.close()


def test_the_helper_exits_when_the_service_says_so_closing_its_dialogs():
    """The service stops (upgrade, uninstall, restart): `exit` ends the helper (no reconnecting), so no
    pythonw.exe from Program Files is left running; its open dialog is closed first."""
    connects: list[int] = []
    closed_at_exit: list[bool] = []
    service, helper = socket.socketpair()

    def connect():
        connects.append(1)
        read, write = _sock_io(helper)
        return read, write, helper.close

    def ask(msg, closed):
        closed_at_exit.append(closed.wait(10))
        return None

    service.sendall(desktop.prompt_message(_show("d" * 32)))
    service.sendall(desktop.encode_message("exit", reason="the service is stopping"))
    desktop.run_helper(connect, user="alice", ask=ask, sleep=lambda s: pytest.fail("reconnect attempted"))
    assert connects == [1] and closed_at_exit == [True]
    service.close()


def test_the_dialogs_timer_closes_it_when_asked_or_expired():
    closed = threading.Event()
    assert not desktop.dialog_should_close(closed, deadline=0)  # no deadline given
    assert not desktop.dialog_should_close(closed, deadline=200.0, now=lambda: 100.0)
    assert desktop.dialog_should_close(closed, deadline=200.0, now=lambda: 200.0)  # expired
    closed.set()
    assert desktop.dialog_should_close(closed, deadline=200.0, now=lambda: 100.0)


def test_the_installer_ends_the_helpers_of_this_installation_only():
    """`desktop-helper --close-all` (the MSI's CloseHelpers): real processes here, psutil's view of them."""
    import psutil

    sleeper = "import time; time.sleep(60)"
    helper = subprocess.Popen([sys.executable, "-c", sleeper, "desktop-helper"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "run"])  # e.g. the service's python.exe
    try:
        python_dir = os.path.dirname(psutil.Process(helper.pid).exe())
        assert [p.pid for p in desktop.helper_processes(python_dir)] == [helper.pid]
        assert desktop.helper_processes("/nonexistent/python") == []  # another installation's helpers
        assert desktop.close_all_helpers(python_dir) == [helper.pid]
        assert helper.wait(10) is not None and other.poll() is None
    finally:
        for proc in (helper, other):
            proc.kill()
            proc.wait()


def test_the_helper_refuses_what_it_does_not_understand():
    service, helper = socket.socketpair()
    service.sendall(b'{"type":"run","command":"calc.exe"}\n')
    read, write = _sock_io(helper)
    with pytest.raises(desktop.ChannelError, match="unknown message"):
        desktop.serve_service(read, write, user="alice", ask=lambda msg, closed: pytest.fail("asked"))
    service.close()
    helper.close()


def test_the_logon_helper_waits_for_the_service_and_reconnects_after_it_went_away():
    """Started at logon (the Run key), possibly before the service has its channel: it retries, and
    after the service closed the channel (restarted, upgraded) it connects again."""
    attempts: list[str] = []
    waits: list[float] = []
    served: list[str] = []
    closed: list[int] = []
    services: list[socket.socket] = []

    def connect():
        attempts.append("try")
        if len(attempts) <= 2:
            raise FileNotFoundError(2, "The system cannot find the file specified")  # no pipe yet
        service, helper = socket.socketpair()
        service.sendall(desktop.prompt_message(_show(str(len(attempts)) * 32)))
        service.shutdown(socket.SHUT_WR)  # the service goes away after one prompt
        services.append(service)
        read, write = _sock_io(helper)
        return read, write, lambda: (closed.append(1), helper.close())

    desktop.run_helper(
        connect,
        user="alice",
        ask=lambda msg, closed: served.append(msg["prompt_id"][0]) or None,
        sleep=waits.append,
        stop=lambda: len(attempts) >= 4,
    )
    assert attempts == ["try"] * 4 and served == ["3", "4"] and closed == [1, 1]
    assert waits == [desktop.RECONNECT_DELAY] * 4
    hello = services[0].recv(65536).splitlines()[0]
    assert desktop.decode_message(hello) == {"type": "hello", "user": "alice"}
    for service in services:
        service.close()


def test_the_pipe_admits_system_and_the_sessions_user_only():
    sid = "S-1-5-21-3623811015-3361044348-30300820-1013"
    assert desktop.pipe_sddl(sid) == f"O:SYG:SYD:P(A;;GA;;;SY)(A;;GA;;;{sid})"
    aces = desktop.pipe_sddl(sid).split("D:P", 1)[1]
    assert aces.count("(") == 2  # two ACEs, protected (P): nothing inherited, no Administrators, no Everyone
    assert desktop.pipe_sddl("S-1-12-1-1-2-3-4").endswith("(A;;GA;;;S-1-12-1-1-2-3-4)")  # an Entra ID user
    for bad in ("S-1-1-0", "WD", "BA", "S-1-5-32-544", "S-1-5-18", f"{sid})(A;;GA;;;WD", ""):
        with pytest.raises(ValueError, match="not a user SID"):
            desktop.pipe_sddl(bad)


def test_the_helpers_command_line():
    exe = r"C:\Program Files\Caisey\python\python.exe"
    assert desktop.helper_command(exe) == (
        r'"C:\Program Files\Caisey\python\pythonw.exe" -B -m caisey_agent desktop-helper'
    )
    assert desktop.helper_command(exe, 3).endswith("desktop-helper --session 3")
    from caisey_agent import cli

    assert cli.build_parser().parse_args(["desktop-helper"]).session is None  # the Run key's form
