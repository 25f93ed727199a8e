"""The Windows service's desktop prompts, driven on Linux: the platform's session calls are a fake
(sessions listed, channels opened as socket pairs, a scripted helper on the other end speaking the
real message protocol); the broker, the prompt handlers and the store are the agent's own."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from caisey_agent import desktop, platforms, prompt_handlers
from caisey_agent import protocol as p
from caisey_agent.desktop_broker import DesktopBroker
from caisey_agent.platforms.base import Platform
from caisey_agent.prompts import PromptStore
from caisey_agent.state import AgentState


class FakeHelper:
    """A helper in one session: says hello as ``claims``, records what it is sent, answers prompts
    with ``answer`` (True/False, or None: leaves them unanswered)."""

    def __init__(
        self, claims: str, answer: bool | None, after: asyncio.Event | None = None, obeys_exit: bool = True
    ) -> None:
        self.claims, self.answer, self.after, self.obeys_exit = claims, answer, after, obeys_exit
        self.got_prompt = asyncio.Event()
        self.received: list[dict] = []
        self.writer = None
        self.ended = False

    async def run(self, reader, writer) -> None:
        self.writer = writer
        writer.write(desktop.encode_message("hello", user=self.claims))
        await writer.drain()
        while line := await reader.readline():
            msg = desktop.decode_message(line)
            self.received.append(msg)
            if msg["type"] == "prompt":
                self.got_prompt.set()
            if msg["type"] == "exit" and self.obeys_exit:
                writer.close()  # the real helper: serve_service returns True, run_helper returns
                break
            if msg["type"] == "prompt" and self.answer is not None:
                if self.after is not None:
                    await self.after.wait()  # answer once another helper shows the prompt too
                writer.write(desktop.encode_message("decision", prompt_id=msg["prompt_id"], approve=self.answer))
                await writer.drain()
        self.ended = True

    def kinds(self) -> list[tuple[str, str]]:
        return [(m["type"], m.get("prompt_id", "")[:1]) for m in self.received]


class FakeChannel:
    """A session's channel (the named pipe's stand-in): connections arrive through a queue."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue = asyncio.Queue()
        self.used = self.closed = False

    async def accept(self):
        conn = await self.connections.get()
        self.used = True
        return conn

    def close(self) -> None:
        self.closed = True


class FakeSessions:
    """The platform's sessions: ``listen`` makes a channel, ``launch_helper`` (the service starting a
    helper) and ``logon`` (the Run key starting one) run a FakeHelper that connects to the session's
    waiting channel, waiting for one to be there as the real helper retries."""

    def __init__(self, sessions: dict[int, tuple[str, FakeHelper]]) -> None:
        self.sessions = sessions
        self.launched: list[int] = []
        self.listened: list[int] = []
        self.fail: set[int] = set()
        self.tasks: list[asyncio.Task] = []
        self.channels: dict[int, FakeChannel] = {}

    def active_sessions(self) -> list[dict]:
        return [{"session_id": sid, "user": user, "domain": "CORP"} for sid, (user, _) in self.sessions.items()]

    def listen(self, session_id: int) -> FakeChannel:
        self.listened.append(session_id)
        if session_id in self.fail:
            raise OSError(1314, "A required privilege is not held by the client")  # WTSQueryUserToken off SYSTEM
        self.channels[session_id] = channel = FakeChannel()
        return channel

    def launch_helper(self, session_id: int) -> None:
        self.launched.append(session_id)
        if session_id in self.fail:
            raise OSError(1314, "A required privilege is not held by the client")
        self.logon(session_id)

    def logon(self, session_id: int, helper: FakeHelper | None = None) -> None:
        helper = helper or self.sessions[session_id][1]
        self.tasks.append(asyncio.get_running_loop().create_task(self._connect(session_id, helper)))

    async def _connect(self, session_id: int, helper: FakeHelper) -> None:
        while (ch := self.channels.get(session_id)) is None or ch.used or ch.closed:
            await asyncio.sleep(0.01)
        service_sock, helper_sock = socket.socketpair()
        h_reader, h_writer = await asyncio.open_connection(sock=helper_sock)
        self.tasks.append(asyncio.get_running_loop().create_task(helper.run(h_reader, h_writer)))
        await ch.connections.put(await asyncio.open_connection(sock=service_sock))


class FakeAgent:
    def __init__(self, state: AgentState) -> None:
        self.state = state
        self.sent: list = []

    async def send_durable(self, body) -> str:
        self.sent.append(body)
        return f"frame-{len(self.sent)}"


class ServicePlatform(Platform):
    name = "windows-service (fake)"

    def __init__(self, sessions: FakeSessions) -> None:
        self.sessions = sessions

    def desktop_sessions(self):
        return self.sessions


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setenv("CAISEY_AGENT_NO_DIALOG", "1")
    state = AgentState(tmp_path / "state")
    yield FakeAgent(state)
    platforms.set_override(None)
    state.close()


def show(prompt_id: str) -> p.Envelope:
    body = p.PromptShow(
        prompt_id=prompt_id,
        title="Shell command",
        detail="shell command (cmd): net stop spooler",
        requested_by="tech@msp.example",
        organisation="Northwind IT",
        deadline=time.time() + 300,
    )
    return p.Envelope(type=p.PromptShow.TYPE, id="f" + prompt_id[:8], ts=time.time(), body=body)


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def state_of(agent, prompt_id: str) -> str:
    return PromptStore(agent.state.db).find(prompt_id).state


async def test_a_prompt_reaches_the_users_helper_and_its_answer_is_sent(agent):
    alice = FakeHelper("alice", answer=True)
    sessions = FakeSessions({2: ("alice", alice)})
    platforms.set_override(ServicePlatform(sessions))
    await prompt_handlers.handle_prompt_show(agent, show("a" * 32))

    await until(lambda: state_of(agent, "a" * 32) == "approved")
    held = PromptStore(agent.state.db).find("a" * 32)
    assert held.decided_by == "desktop:alice"
    prompt = alice.received[0]
    assert prompt["type"] == "prompt" and prompt["detail"] == "shell command (cmd): net stop spooler"
    assert prompt["organisation"] == "Northwind IT" and prompt["requested_by"] == "tech@msp.example"
    # What the server hears: shown to the user (acknowledged), then the decision, as durable updates.
    await until(lambda: [u.state for u in agent.sent] == ["acknowledged", "approved"])
    assert agent.sent[-1].decided_by == "desktop:alice"
    await agent.desktop_broker.close()


async def test_first_answer_wins_the_other_session_is_told_to_withdraw(agent):
    bob = FakeHelper("bob", answer=None)
    alice = FakeHelper("alice", answer=False, after=bob.got_prompt)
    platforms.set_override(ServicePlatform(FakeSessions({2: ("alice", alice), 3: ("bob", bob)})))
    await prompt_handlers.handle_prompt_show(agent, show("b" * 32))
    await until(lambda: ("withdraw", "b") in bob.kinds())
    assert state_of(agent, "b" * 32) == "denied"
    assert bob.kinds() == [("prompt", "b"), ("withdraw", "b")]
    assert ("withdraw", "b") not in alice.kinds()
    await agent.desktop_broker.close()


async def test_one_helper_per_session_reused_and_reached_again_after_it_left(agent):
    alice = FakeHelper("alice", answer=None)
    sessions = FakeSessions({2: ("alice", alice)})
    platforms.set_override(ServicePlatform(sessions))
    await prompt_handlers.handle_prompt_show(agent, show("c" * 32))
    await until(lambda: len(alice.received) == 1)
    await prompt_handlers.handle_prompt_show(agent, show("d" * 32))
    await until(lambda: len(alice.received) == 2)
    assert sessions.launched == [2]  # the same helper shows the second prompt

    alice.writer.close()  # the user logged off: the helper is gone
    await until(lambda: 2 not in agent.desktop_broker.links)
    again = FakeHelper("alice", answer=True)
    sessions.sessions[2] = ("alice", again)
    await prompt_handlers.handle_prompt_show(agent, show("e" * 32))
    # The new helper is shown every open prompt, the older ones first, and answers them.
    await until(lambda: [state_of(agent, x * 32) for x in "cde"] == ["approved"] * 3)
    assert sessions.launched == [2, 2]
    assert [k for k in again.kinds()] == [("prompt", "c"), ("prompt", "d"), ("prompt", "e")]
    await agent.desktop_broker.close()


async def test_a_withdraw_from_the_server_reaches_the_helper(agent):
    alice = FakeHelper("alice", answer=None)
    platforms.set_override(ServicePlatform(FakeSessions({2: ("alice", alice)})))
    await prompt_handlers.handle_prompt_show(agent, show("f" * 32))
    await until(lambda: len(alice.received) == 1)
    withdraw = p.PromptWithdraw(prompt_id="f" * 32, reason="expired")
    await prompt_handlers.handle_prompt_withdraw(
        agent, p.Envelope(type=p.PromptWithdraw.TYPE, id="w1", ts=time.time(), body=withdraw)
    )
    await until(lambda: alice.kinds() == [("prompt", "f"), ("withdraw", "f")])
    assert state_of(agent, "f" * 32) == "withdrawn"
    await agent.desktop_broker.close()


async def test_a_helper_claiming_another_user_is_refused_and_the_prompt_waits_for_the_cli(agent):
    mallory = FakeHelper("mallory", answer=True)
    platforms.set_override(ServicePlatform(FakeSessions({2: ("alice", mallory)})))
    broker = prompt_handlers.broker_of(agent)
    prompt_handlers.store_of(agent).store(show("a1" + "0" * 30).body)
    assert await broker.show(PromptStore(agent.state.db).find("a1")) == 0
    assert mallory.received == [] and broker.links == {}
    assert state_of(agent, "a1") == "delivered"  # still there for `caisey-agent prompts`
    await broker.close()


async def test_a_session_that_cannot_be_reached_does_not_stop_the_others(agent):
    bob = FakeHelper("bob", answer=True)
    sessions = FakeSessions({2: ("alice", FakeHelper("alice", answer=True)), 3: ("bob", bob)})
    sessions.fail.add(2)
    platforms.set_override(ServicePlatform(sessions))
    await prompt_handlers.handle_prompt_show(agent, show("b2" + "0" * 30))
    await until(lambda: state_of(agent, "b2") == "approved")
    assert PromptStore(agent.state.db).find("b2").decided_by == "desktop:bob"
    assert sorted(sessions.listened) == [2, 3] and sessions.launched == [3]
    # Not tried again at every look at the sessions (it would fill the log every 5 s).
    await prompt_handlers.handle_prompt_show(agent, show("c2" + "0" * 30))
    await until(lambda: state_of(agent, "c2") == "approved")
    assert sorted(sessions.listened) == [2, 3]
    await agent.desktop_broker.close()


async def test_an_answer_for_a_prompt_not_shown_to_that_helper_is_not_applied(agent):
    store = PromptStore(agent.state.db)
    store.store(show("c3" + "0" * 30).body)
    alice = FakeHelper("alice", answer=None)
    sessions = FakeSessions({2: ("alice", alice)})
    broker = DesktopBroker(store, sessions, on_decided=lambda: asyncio.sleep(0))
    store.store(show("d4" + "0" * 30).body)
    await broker.show(store.find("d4"))
    alice.writer.write(desktop.encode_message("decision", prompt_id="9" * 32, approve=True))
    alice.writer.write(desktop.encode_message("decision", prompt_id=store.find("d4").prompt_id, approve=True))
    await until(lambda: store.find("d4").state == "approved")
    assert 2 in broker.links  # a refused answer does not drop the helper
    await broker.close()


def test_off_the_windows_service_there_is_no_broker(agent):
    platforms.set_override(None)
    assert prompt_handlers.broker_of(agent) is None  # Linux: the dialog or the CLI, as before


async def test_a_prompt_answered_meanwhile_is_not_shown_to_a_helper_that_connects_later(agent):
    store = prompt_handlers.store_of(agent)
    store.store(show("a5" + "0" * 30).body)
    store.decide("a5", approve=True, by="CORP\\admin")  # `caisey-agent prompts approve` before anyone saw it
    alice = FakeHelper("alice", answer=None)
    platforms.set_override(ServicePlatform(FakeSessions({2: ("alice", alice)})))
    await prompt_handlers.handle_prompt_show(agent, show("b6" + "0" * 30))
    await until(lambda: len(alice.received) == 1)
    assert alice.kinds() == [("prompt", "b")]
    await agent.desktop_broker.close()


def test_the_windows_platform_has_desktop_sessions_only_as_the_service(monkeypatch):
    from caisey_agent.platforms.windows import WindowsPlatform

    monkeypatch.setattr(desktop, "running_as_service", lambda: True)
    assert isinstance(WindowsPlatform().desktop_sessions(), desktop.WindowsDesktopSessions)
    monkeypatch.setattr(desktop, "running_as_service", lambda: False)  # `caisey-agent run` in a console
    assert WindowsPlatform().desktop_sessions() is None
    monkeypatch.undo()
    assert desktop.running_as_service() is False  # without pywin32 (here): never a broker


# --- helpers started at logon (the MSI's Run key) ------------------------------------------------


def quick(agent) -> DesktopBroker:
    broker = prompt_handlers.broker_of(agent)
    broker.watch_interval = 0.02
    broker.start()
    return broker


async def test_a_user_who_logs_on_after_the_prompt_arrived_is_shown_it_at_logon(agent):
    sessions = FakeSessions({})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    await prompt_handlers.handle_prompt_show(agent, show("a7" + "0" * 30))
    await asyncio.sleep(0.1)
    assert state_of(agent, "a7") == "delivered"  # nobody is logged on: waiting

    alice = FakeHelper("alice", answer=True)
    sessions.sessions[2] = ("alice", alice)  # alice logs on; the Run key starts her helper
    sessions.logon(2)
    await until(lambda: state_of(agent, "a7") == "approved")
    assert sessions.launched == []  # the service did not have to start one
    assert PromptStore(agent.state.db).find("a7").decided_by == "desktop:alice"
    await until(lambda: [u.state for u in agent.sent] == ["acknowledged", "approved"])
    await broker.close()


async def test_a_helper_connected_at_logon_gets_the_prompt_without_a_launch(agent):
    alice = FakeHelper("alice", answer=False)
    sessions = FakeSessions({2: ("alice", alice)})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    sessions.logon(2)
    await until(lambda: 2 in broker.links)
    await prompt_handlers.handle_prompt_show(agent, show("b8" + "0" * 30))
    await until(lambda: state_of(agent, "b8") == "denied")
    assert sessions.launched == [] and alice.kinds() == [("prompt", "b")]
    await broker.close()


async def test_a_helper_that_left_is_listened_for_again_and_a_session_that_ended_is_dropped(agent):
    alice = FakeHelper("alice", answer=None)
    sessions = FakeSessions({2: ("alice", alice)})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    sessions.logon(2)
    await until(lambda: 2 in broker.links)
    alice.writer.close()  # the helper exited (or the user ended it)
    await until(lambda: 2 not in broker.links)
    again = FakeHelper("alice", answer=True)
    sessions.logon(2, again)  # started again (next logon, or by hand): a new channel waits for it
    await until(lambda: 2 in broker.links)
    await prompt_handlers.handle_prompt_show(agent, show("c9" + "0" * 30))
    await until(lambda: state_of(agent, "c9") == "approved")
    assert sessions.launched == [] and sessions.listened == [2, 2]

    sessions.sessions[3] = ("bob", FakeHelper("bob", answer=None))  # bob logs on, no helper (yet)
    await until(lambda: 3 in sessions.channels)
    del sessions.sessions[2], sessions.sessions[3]  # both log off
    await until(lambda: not broker.listeners)
    await until(lambda: again.ended)  # the service closed its end: the helper read the end of it
    assert 2 not in broker.links
    assert sessions.channels[3].closed  # the channel nobody connected to is closed too
    await broker.close()


async def test_the_service_starts_the_agents_broker_when_it_connects(agent, monkeypatch):
    """prompt_handlers.watch (run on each connection) starts the broker's session watch: channels wait
    in the sessions before any prompt, for the logon helpers."""
    sessions = FakeSessions({2: ("alice", FakeHelper("alice", answer=None))})
    platforms.set_override(ServicePlatform(sessions))
    monkeypatch.setattr(prompt_handlers, "send_unsent", lambda agent: asyncio.sleep(0))
    watcher = asyncio.get_running_loop().create_task(prompt_handlers.watch(agent))
    await until(lambda: sessions.listened == [2])
    watcher.cancel()
    await agent.desktop_broker.close()


# --- the service stops (restart, upgrade, uninstall): the helpers exit -------------------------------


async def test_a_service_stop_tells_every_helper_to_exit_and_waits_for_them(agent):
    """Files in use: an upgrade or uninstall stops the service before it removes Program Files; the
    helpers running pythonw.exe from there must be gone by then."""
    alice, bob = FakeHelper("alice", answer=None), FakeHelper("bob", answer=None)
    sessions = FakeSessions({2: ("alice", alice), 3: ("bob", bob)})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    sessions.logon(2)
    sessions.logon(3)
    await until(lambda: set(broker.links) == {2, 3})
    await prompt_handlers.handle_prompt_show(agent, show("e1" + "0" * 30))
    await until(lambda: alice.kinds() == [("prompt", "e")] and bob.kinds() == [("prompt", "e")])

    await prompt_handlers.close_desktop(agent)  # what main.run does when the agent stops
    assert alice.ended and bob.ended  # they left before close returned
    assert alice.kinds()[-1] == ("exit", "") and bob.kinds()[-1] == ("exit", "")
    assert alice.received[-1]["reason"] == "the service is stopping"
    assert broker.links == {} and sessions.listened == [2, 3]  # no channel made again after the exit
    assert state_of(agent, "e1") == "acknowledged"  # the prompt stays, for the next helper or the CLI


async def test_a_helper_that_does_not_leave_is_not_waited_for_past_the_grace(agent):
    stubborn = FakeHelper("alice", answer=None, obeys_exit=False)  # e.g. an older helper
    sessions = FakeSessions({2: ("alice", stubborn)})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    sessions.logon(2)
    await until(lambda: 2 in broker.links)
    await broker.close(helpers_exit=True, grace=0.2)
    assert stubborn.kinds() == [("exit", "")]
    await until(lambda: stubborn.ended)  # the service closed its end anyway; the MSI ends such a helper
    assert broker.links == {}


async def test_prompts_open_when_the_service_starts_are_shown_again(agent):
    """The helpers were told to exit at the last stop: at the start, a prompt still open gets a helper
    started where none connects by itself."""
    prompt_handlers.store_of(agent).store(show("f2" + "0" * 30).body)
    alice = FakeHelper("alice", answer=True)
    sessions = FakeSessions({2: ("alice", alice)})
    platforms.set_override(ServicePlatform(sessions))
    broker = quick(agent)
    await until(lambda: state_of(agent, "f2") == "approved")
    assert sessions.launched == [2] and alice.kinds() == [("prompt", "f")]
    broker.start()  # every reconnection calls start(): not shown again
    await asyncio.sleep(0.05)
    assert sessions.launched == [2]
    await broker.close()
