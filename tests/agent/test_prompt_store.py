"""The runtime's prompt store: a withdraw takes an undecided prompt down, but a decision already
made stays to be reported (a waking laptop may read the withdraw of an expired prompt before it
sent the approval its user gave before the deadline; the server judges that decision)."""

from __future__ import annotations

import time

import pytest

from caisey_agent import protocol as p
from caisey_agent.prompts import PromptRefused, PromptStore
from caisey_agent.state import AgentState


@pytest.fixture
def store(tmp_path):
    state = AgentState(tmp_path / "state")
    yield PromptStore(state.db)
    state.close()


def _show(prompt_id: str) -> p.PromptShow:
    return p.PromptShow(
        prompt_id=prompt_id,
        title="Shell command",
        detail="shell command: echo hi",
        requested_by="tech",
        organisation="Northwind IT",
        deadline=time.time() + 300,
    )


def test_withdraw_keeps_a_decision_not_yet_reported(store):
    store.store(_show("a" * 32))
    decided = store.decide("a" * 32, approve=True, by="alice")
    store.withdraw("a" * 32)  # the withdraw of the prompt the server expired arrives first
    assert store.find("a" * 32).state == "approved"
    assert [u.prompt_id for u in store.unsent_updates()] == ["a" * 32]
    [report] = store.reports()
    assert report.state == "approved" and report.decided_at == decided.decided_at and report.decided_by == "alice"


def test_withdraw_takes_an_undecided_prompt_down(store):
    store.store(_show("b" * 32))
    store.acknowledge("b" * 32)
    store.withdraw("b" * 32)
    assert store.find("b" * 32).state == "withdrawn" and store.reports() == []
    with pytest.raises(PromptRefused, match="withdrawn"):
        store.decide("b" * 32, approve=True)
