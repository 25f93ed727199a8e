"""The agent's durable state, its reconnect backoff, and the enroll command's local refusals."""

from __future__ import annotations

import json
import os
import stat

import pytest

from caisey_agent import cli
from caisey_agent import enroll as enroll_module
from caisey_agent.enroll import EnrollError, enroll
from caisey_agent.runner import backoff_delay
from caisey_agent.state import AgentState, Identity


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "agent-state"


@pytest.fixture
def state(state_dir):
    s = AgentState(state_dir)
    yield s
    s.close()


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def identity(**overrides) -> Identity:
    values = {
        "server": "https://caisey.example.com",
        "endpoint_id": "6f1c2d4e-0000-4000-8000-000000000001",
        "credential": "the-credential",
        "machine_id": "m" * 32,
        "tenant": "Acme MSP",
        "client_group": "Contoso",
    }
    return Identity(**{**values, **overrides})


# --- files readable by the owner only ---------------------------------------------------------


def test_state_file_is_0600_and_its_folder_0700_whatever_the_umask(state_dir):
    old_umask = os.umask(0)  # the most permissive: nothing may rely on the umask
    try:
        s = AgentState(state_dir)
        s.save_identity(identity())
        s.record_event("e1", "action.run")
        s.outbox_add("f1", "{}")
    finally:
        os.umask(old_umask)
    try:
        assert mode_of(state_dir) == 0o700
        assert mode_of(s.path) == 0o600
        sides = [state_dir / (s.FILENAME + suffix) for suffix in ("-wal", "-shm")]
        for side in sides:
            if side.exists():
                assert mode_of(side) == 0o600, side
        assert any(side.exists() for side in sides)  # WAL mode is on, so they were checked
    finally:
        s.close()


def test_reopening_tightens_loose_permissions(state_dir):
    AgentState(state_dir).close()
    os.chmod(state_dir, 0o755)
    os.chmod(state_dir / AgentState.FILENAME, 0o644)
    AgentState(state_dir).close()
    assert mode_of(state_dir) == 0o700
    assert mode_of(state_dir / AgentState.FILENAME) == 0o600


# --- identity -------------------------------------------------------------------------------------


def test_identity_is_absent_until_saved_and_survives_a_restart(state_dir, state):
    assert state.identity() is None
    state.save_identity(identity())
    assert state.identity() == identity()
    state.close()
    reopened = AgentState(state_dir)
    try:
        assert reopened.identity() == identity()
    finally:
        reopened.close()


def test_saving_again_replaces_the_identity(state):
    state.save_identity(identity())
    state.save_identity(identity(endpoint_id="another", credential="rotated"))
    assert state.identity().endpoint_id == "another" and state.identity().credential == "rotated"


def test_machine_id_is_stable_per_state_folder(tmp_path, state_dir, state):
    first = state.machine_id()
    assert first == state.machine_id() and len(first) >= 16
    state.close()
    assert AgentState(state_dir).machine_id() == first
    assert AgentState(tmp_path / "other-machine").machine_id() != first


def test_status_output_never_shows_the_credential(state):
    state.save_identity(identity())
    dump = json.loads(state.to_json())
    assert dump["enrolled"] is True and dump["endpoint_id"] == identity().endpoint_id
    assert "the-credential" not in state.to_json()


# --- events acted on ------------------------------------------------------------------------------


def test_record_event_deduplicates(state_dir, state):
    assert state.record_event("evt-1", "action.run") is True
    assert state.record_event("evt-1", "action.run") is False
    assert state.record_event("evt-2", "action.run") is True
    state.close()
    reopened = AgentState(state_dir)  # a replay after a restart is still recognised
    try:
        assert reopened.record_event("evt-1", "action.run") is False
    finally:
        reopened.close()


def test_prune_forgets_only_old_events(state):
    state.record_event("old", "action.run")
    state.db.execute("UPDATE processed_events SET received_at = received_at - 40 * 86400 WHERE id = 'old'")
    state.record_event("new", "action.run")
    state.prune_events()
    assert state.record_event("old", "action.run") is True
    assert state.record_event("new", "action.run") is False


# --- outbox ----------------------------------------------------------------------------------------


def test_outbox_keeps_frames_in_order_until_acknowledged(state_dir, state):
    for n in (3, 1, 2):
        state.outbox_add(f"f{n}", f'{{"n": {n}}}')
    state.outbox_add("f1", '{"n": "duplicate"}')  # same id again: kept once, first version
    assert state.outbox_pending() == [("f3", '{"n": 3}'), ("f1", '{"n": 1}'), ("f2", '{"n": 2}')]
    assert state.outbox_depth() == 3

    assert state.outbox_ack("f1") is True
    assert state.outbox_ack("f1") is False  # a duplicate ack is harmless
    assert state.outbox_ack("never-sent") is False
    state.close()

    reopened = AgentState(state_dir)  # unacknowledged frames survive a restart
    try:
        assert [frame_id for frame_id, _ in reopened.outbox_pending()] == ["f3", "f2"]
        assert json.loads(reopened.to_json())["unacknowledged_frames"] == 2
    finally:
        reopened.close()


# --- reconnect backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 31, 1000, 10**6])
@pytest.mark.parametrize("base,cap", [(1.0, 60.0), (0.5, 5.0), (2.0, 1.0)])
def test_backoff_is_full_jitter_below_the_cap(attempt, base, cap):
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    delays = [backoff_delay(attempt, base=base, cap=cap) for _ in range(300)]
    assert all(0 <= d <= ceiling for d in delays)
    assert all(d <= cap for d in delays)
    # Full jitter spreads over the whole range, not around one value.
    assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8


def test_backoff_grows_until_the_cap():
    means = [sum(backoff_delay(n, base=1.0, cap=60.0) for _ in range(400)) / 400 for n in range(8)]
    assert means[0] < means[2] < means[4] < means[5]
    assert means[7] == pytest.approx(30.0, rel=0.2)  # uniform in [0, 60]


# --- enroll: refusals that need no server ------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def post_json(*args, **kwargs):
        raise AssertionError("enroll must not contact the server here")

    monkeypatch.setattr(enroll_module, "post_json", post_json)


def test_enroll_refuses_a_second_enrollment_without_replace(state, no_network):
    state.save_identity(identity())
    with pytest.raises(EnrollError, match="--replace") as exc:
        enroll(state=state, server="https://caisey.example.com", token="cet_new")
    assert identity().endpoint_id in str(exc.value)
    assert state.identity() == identity()


def test_cli_enroll_refuses_a_second_enrollment_without_replace(state_dir, state, no_network, capsys):
    state.save_identity(identity())
    state.close()
    code = cli.main(
        ["enroll", "--state-dir", str(state_dir), "--server", "https://caisey.example.com", "--token", "cet_x"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "already enrolled" in err and "--replace" in err
    reopened = AgentState(state_dir)
    try:
        assert reopened.identity() == identity()
    finally:
        reopened.close()


def test_enroll_with_replace_asks_the_server_and_keeps_the_machine_id(state, monkeypatch):
    state.save_identity(identity(machine_id=state.machine_id()))
    sent = []

    def post_json(server, path, body, *, ca_bundle, key_pin):
        sent.append((server + path, body))
        answer = {
            "endpoint_id": identity().endpoint_id,
            "credential": "rotated",
            "tenant": "Acme MSP",
            "client_group": "Contoso",
        }
        return 200, json.dumps(answer).encode(), "sha256/seen"

    monkeypatch.setattr(enroll_module, "post_json", post_json)
    result = enroll(state=state, server="https://caisey.example.com/", token="cet_new", replace=True, hostname="pc01")
    ((url, body),) = sent
    assert url == "https://caisey.example.com/api/agent/v1/enroll"
    assert body == {"token": "cet_new", "machine_id": state.machine_id(), "hostname": "pc01", "replace": True}
    assert result.credential == "rotated" and state.identity().credential == "rotated"
    assert state.identity().machine_id == identity(machine_id=state.machine_id()).machine_id
    assert state.identity().key_pin == ""  # not asked to pin


def test_enroll_against_an_unreachable_server_keeps_the_old_identity(state):
    state.save_identity(identity())
    with pytest.raises(EnrollError, match="could not reach"):
        enroll(state=state, server="http://127.0.0.1:9", token="cet_new", replace=True)
    assert state.identity() == identity()
