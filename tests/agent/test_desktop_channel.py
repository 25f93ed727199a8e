"""The desktop prompt helper's channel: the messages between the service and a user's helper, over a
socket pair (the named pipe's stand-in on Linux), and how a decision is applied."""

from __future__ import annotations

import asyncio
import socket
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
