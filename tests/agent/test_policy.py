"""The endpoint's local policy file: defaults, parsing, and refusing files that cannot be trusted."""

from __future__ import annotations

import json
import os

import pytest

from caisey_agent import policy as pol


def write(tmp_path, doc, mode=0o600):
    path = tmp_path / "policy.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.chmod(path, mode)
    return path


def test_missing_file_means_defaults(tmp_path):
    policy = pol.load_policy(tmp_path)
    assert not policy.lockdown
    assert policy.forbid_categories == frozenset() and policy.forbid_kinds == frozenset()
    assert policy.allowed_tail_paths == ("/var/log/*",)
    # Shell commands need an explicit "allow_shell": true (issue 11 item 10; the default ran them).
    assert not policy.allow_shell
    assert '"allow_shell": true' in policy.refusal("shell", "shell")
    assert policy.refusal("service_restart", "command") is None


def test_shell_runs_only_when_the_file_allows_it(tmp_path):
    write(tmp_path, {"forbid_kinds": ["service_restart"]})
    assert "allow_shell" in pol.load_policy(tmp_path).refusal("shell", "shell")
    write(tmp_path, {"allow_shell": True})
    allowed = pol.load_policy(tmp_path)
    assert allowed.refusal("shell", "shell") is None and allowed.describe()["allow_shell"] is True


@pytest.mark.parametrize(
    "doc, problem",
    [
        ({"allow_shell": "yes"}, "allow_shell must be true or false"),
        ({"allow_shell": True, "forbid_categories": ["shell"]}, "forbid_categories lists"),
    ],
)
def test_contradictory_or_mistyped_allow_shell_means_lockdown(tmp_path, doc, problem):
    write(tmp_path, doc)
    policy = pol.load_policy(tmp_path)
    assert policy.lockdown and problem in policy.problem
    assert policy.refusal("shell", "shell") is not None


def test_write_policy_leaves_an_owner_only_file_the_agent_trusts(tmp_path):
    path = pol.write_policy(tmp_path / "state", {"allow_shell": True})
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert pol.load_policy(tmp_path / "state").allow_shell
    with pytest.raises(ValueError, match="unknown keys"):
        pol.write_policy(tmp_path / "state", {"allow_everything": True})


def test_valid_file_is_applied(tmp_path):
    write(
        tmp_path,
        {
            "forbid_categories": ["shell"],
            "forbid_kinds": ["service_restart"],
            "allowed_tail_paths": ["/var/log/*", "/tmp/caisey-*"],
        },
    )
    policy = pol.load_policy(tmp_path)
    assert not policy.lockdown
    assert "forbids shell actions" in policy.refusal("shell", "shell")
    assert "forbids the action 'service_restart'" in policy.refusal("service_restart", "command")
    assert policy.refusal("system_summary", "diagnostic") is None
    assert policy.allowed_tail_paths == ("/var/log/*", "/tmp/caisey-*")
    assert policy.describe()["forbid_categories"] == ["shell"]


def test_empty_tail_list_allows_no_file(tmp_path):
    write(tmp_path, {"allowed_tail_paths": []})
    policy = pol.load_policy(tmp_path)
    assert policy.tail_path_allowed("/var/log/syslog")[0] is False


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_group_or_world_writable_file_means_lockdown(tmp_path, mode):
    write(tmp_path, {"forbid_categories": []}, mode=mode)
    policy = pol.load_policy(tmp_path)
    assert policy.lockdown
    assert "writable by group or others" in policy.problem
    # Lockdown: diagnostics only, and no file may be tailed.
    assert policy.refusal("system_summary", "diagnostic") is None
    assert "lockdown" in policy.refusal("shell", "shell")
    assert policy.refusal("service_restart", "command") is not None
    assert policy.allowed_tail_paths == ()


def test_world_readable_but_owner_writable_is_fine(tmp_path):
    write(tmp_path, {"forbid_categories": ["shell"]}, mode=0o644)
    assert not pol.load_policy(tmp_path).lockdown


def test_file_owned_by_another_user_means_lockdown(tmp_path, monkeypatch):
    path = write(tmp_path, {})
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        owner = 65534
    else:  # the file is ours: pretend the agent runs as someone else
        owner = os.geteuid()
        monkeypatch.setattr(pol.os, "geteuid", lambda: owner + 1)
    policy = pol.load_policy(tmp_path)
    assert policy.lockdown and f"owned by uid {owner}" in policy.problem


def test_symlinked_policy_is_not_followed(tmp_path):
    real = tmp_path / "elsewhere.json"
    real.write_text("{}")
    os.chmod(real, 0o600)
    (tmp_path / "policy.json").symlink_to(real)
    policy = pol.load_policy(tmp_path)
    assert policy.lockdown and "cannot open" in policy.problem


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not a valid policy"),
        ('["shell"]', "top level must be a JSON object"),
        ('{"forbid_category": ["shell"]}', "unknown keys: forbid_category"),
        ('{"forbid_categories": ["shel"]}', "unknown categories"),
        ('{"forbid_categories": "shell"}', "must be a list"),
        ('{"forbid_kinds": ["reboot_now"]}', "unknown action kinds"),
        ('{"allowed_tail_paths": ["logs/*"]}', "not an absolute path pattern"),
    ],
)
def test_malformed_file_means_lockdown(tmp_path, content, problem):
    write(tmp_path, content)
    policy = pol.load_policy(tmp_path)
    assert policy.lockdown, "a broken policy must fail closed, not open"
    assert problem in policy.problem
    assert policy.refusal("shell", "shell") is not None


def test_oversized_file_means_lockdown(tmp_path):
    write(tmp_path, json.dumps({"allowed_tail_paths": ["/var/log/" + "x" * 100_000]}))
    assert "larger than" in pol.load_policy(tmp_path).problem


def test_tail_paths_are_matched_after_resolving_symlinks_and_dots(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("x")
    (tmp_path / "secret").write_text("s")
    (logs / "evil.log").symlink_to(tmp_path / "secret")
    policy = pol.parse_policy({"allowed_tail_paths": [str(logs / "*")]})
    assert policy.tail_path_allowed(str(logs / "app.log")) == (True, str(logs / "app.log"))
    assert policy.tail_path_allowed(str(logs / "evil.log")) == (False, str(tmp_path / "secret"))
    assert policy.tail_path_allowed(str(logs / ".." / "secret"))[0] is False
    # fnmatch's * also crosses folders: logs/* covers logs/sub/file.
    (logs / "sub").mkdir()
    (logs / "sub" / "f.log").write_text("x")
    assert policy.tail_path_allowed(str(logs / "sub" / "f.log"))[0] is True


def test_pattern_folders_are_resolved_too(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.log").write_text("x")
    (tmp_path / "alias").symlink_to(real)
    # The administrator wrote the symlinked folder name (like /tmp on macOS, a link to /private/tmp).
    policy = pol.parse_policy({"allowed_tail_paths": [str(tmp_path / "alias" / "*.log")]})
    assert policy.tail_path_allowed(str(tmp_path / "alias" / "a.log"))[0] is True
    assert policy.tail_path_allowed(str(real / "a.log"))[0] is True


def test_the_cli_allows_shell_keeping_the_other_keys(tmp_path, capsys):
    """What an installer and `caisey demo` run: `caisey-agent policy --allow-shell`."""
    from caisey_agent import cli

    state = tmp_path / "state"
    assert cli.main(["policy", "--state-dir", str(state)]) == 0
    assert json.loads(capsys.readouterr().out)["allow_shell"] is False
    state.mkdir(exist_ok=True)
    write(state, {"forbid_kinds": ["service_restart"]})
    assert cli.main(["policy", "--allow-shell", "--state-dir", str(state)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["allow_shell"] is True and shown["forbid_kinds"] == ["service_restart"]
    assert pol.load_policy(state).refusal("shell", "shell") is None
    assert cli.main(["policy", "--forbid-shell", "--state-dir", str(state)]) == 0
    assert pol.load_policy(state).refusal("shell", "shell") is not None


# --- The Windows installer's ALLOW_SHELL property (packaging/windows/make_wxs.py runs this) --------


def test_installer_without_allow_shell_writes_an_explicit_no_shell_policy(tmp_path):
    state = tmp_path / "state"
    said = pol.apply_installer_choice(state, "")
    assert json.loads((state / "policy.json").read_text()) == {"allow_shell": False}
    assert "no shell commands" in said
    policy = pol.load_policy(state)
    assert not policy.lockdown and policy.source == str(state / "policy.json")  # explicit, not the defaults
    assert policy.refusal("shell", "shell") is not None


def test_installer_allow_shell_sets_it_keeping_the_administrators_other_keys(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    write(state, {"forbid_kinds": ["service_restart"], "allowed_tail_paths": ["/var/log/*"]})
    assert 'allow_shell": true' in pol.apply_installer_choice(state, "1")
    assert json.loads((state / "policy.json").read_text()) == {
        "forbid_kinds": ["service_restart"],
        "allowed_tail_paths": ["/var/log/*"],
        "allow_shell": True,
    }
    assert pol.load_policy(state).refusal("shell", "shell") is None
    pol.apply_installer_choice(state, "0")
    assert pol.load_policy(state).refusal("shell", "shell") is not None
    assert pol.load_policy(state).forbid_kinds == frozenset({"service_restart"})


def test_an_upgrade_without_allow_shell_keeps_what_the_administrator_set(tmp_path):
    state = tmp_path / "state"
    pol.apply_installer_choice(state, "1")  # first install: ALLOW_SHELL=1
    before = (state / "policy.json").read_bytes()
    assert "kept" in pol.apply_installer_choice(state, "")  # the upgrade, no property
    assert (state / "policy.json").read_bytes() == before and pol.load_policy(state).allow_shell


@pytest.mark.parametrize("value", ["yes", "true", "2", " 1", "1 --allow-shell"])
def test_installer_refuses_any_other_value_and_changes_nothing(tmp_path, value):
    state = tmp_path / "state"
    with pytest.raises(ValueError, match="ALLOW_SHELL must be 0 or 1"):
        pol.apply_installer_choice(state, value)
    assert not (state / "policy.json").exists()


def test_installer_does_not_touch_a_policy_in_lockdown(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    path = write(state, "{not json")
    with pytest.raises(pol.PolicyNotInUse, match="not a valid policy"):
        pol.apply_installer_choice(state, "1")
    assert path.read_text() == "{not json"
    # Without a choice it is kept (still in lockdown: the agent says why on every refusal).
    assert "not in use" in pol.apply_installer_choice(state, "")
    assert path.read_text() == "{not json" and pol.load_policy(state).lockdown


def test_the_msi_command_line(tmp_path, capsys, monkeypatch):
    """`caisey-agent policy --msi-allow-shell=[ALLOW_SHELL]`, as the MSI's WritePolicy action runs it:
    secures the state folder first, exit 2 (the install rolls back) on a bad value."""
    from caisey_agent import cli, platforms

    secured = []

    class Recording(platforms.current().__class__):
        def secure_dir(self, path):
            secured.append(path)
            super().secure_dir(path)

    platforms.set_override(Recording())
    try:
        state = tmp_path / "ProgramData" / "Caisey"
        assert cli.main(["policy", "--state-dir", str(state), "--msi-allow-shell="]) == 0
        assert secured == [state] and not (state / "agent.sqlite3").exists()  # policy only, no database
        assert '"allow_shell": false' in capsys.readouterr().out
        assert cli.main(["policy", "--state-dir", str(state), "--msi-allow-shell=1"]) == 0
        assert pol.load_policy(state).allow_shell
        assert cli.main(["policy", "--state-dir", str(state), "--msi-allow-shell=on"]) == 2
        assert "ALLOW_SHELL must be 0 or 1" in capsys.readouterr().err
        assert pol.load_policy(state).allow_shell
        assert cli.main(["policy", "--state-dir", str(state), "--msi-allow-shell=0", "--allow-shell"]) == 2
        assert pol.load_policy(state).allow_shell
        # No console at all (a custom action's python.exe may have no stdout): still works.
        monkeypatch.setattr("sys.stdout", None)
        assert cli.main(["policy", "--state-dir", str(state), "--msi-allow-shell=0"]) == 0
        assert not pol.load_policy(state).allow_shell
    finally:
        platforms.set_override(None)
