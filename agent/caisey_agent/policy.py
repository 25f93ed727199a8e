"""The endpoint's local policy: what this machine lets the server ask of it.

The policy lives in ``policy.json`` in the agent's state folder and is written by
whoever administers the endpoint, not by the server. It is enforced here, on the
agent, before anything runs, so a compromised or misconfigured server cannot go
beyond it. It is read afresh for every action, so an edit takes effect at once.

Format (every key optional)::

    {
      "allow_shell": true,                       # shell commands run only when this is true
      "forbid_categories": ["command"],          # of: diagnostic, command, shell
      "forbid_kinds": ["service_restart"],       # action kinds from the catalogue
      "allowed_tail_paths": ["/var/log/*", "/tmp/caisey-*"]   # fnmatch patterns for file_tail
    }

No file: the defaults (no shell commands; ``file_tail`` limited to the system log
folders). Shell commands run only where the endpoint's administrator said so with
``"allow_shell": true`` (the installer and ``caisey demo`` write it, see
:func:`write_policy`): a server that asks for a shell command on a machine nobody
allowed it on gets a refusal that says how to allow it. A file that cannot be trusted (writable by group or others, owned by
another user than the agent's or root) or cannot be understood (bad JSON, unknown
keys, unknown categories or kinds, wrong types) is not used: the agent then runs in
*lockdown* — read-only diagnostics only, no ``file_tail`` at all — and every refusal
says why, so the administrator can fix the file. Failing closed is deliberate: an
administrator who wrote a policy meant to restrict something.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from caisey_agent import protocol as p

log = logging.getLogger("caisey_agent.policy")

FILENAME = "policy.json"
MAX_POLICY_BYTES = 64 * 1024
KEYS = ("allow_shell", "forbid_categories", "forbid_kinds", "allowed_tail_paths")
NO_SHELL = (
    'shell commands are off on this endpoint: its local policy does not say "allow_shell": true'
    " (set it in {path} to allow them)"
)


def default_tail_paths() -> tuple[str, ...]:
    if sys.platform == "win32":
        windir = os.environ.get("SystemRoot", r"C:\Windows")
        programdata = os.environ.get("ProgramData", r"C:\ProgramData")
        return (
            os.path.join(windir, "Logs", "*"),
            os.path.join(windir, "System32", "LogFiles", "*"),
            os.path.join(programdata, "Caisey", "logs", "*"),
        )
    if sys.platform == "darwin":
        return ("/var/log/*", "/Library/Logs/*")
    return ("/var/log/*",)


@dataclass(frozen=True)
class LocalPolicy:
    forbid_categories: frozenset[str] = frozenset()
    forbid_kinds: frozenset[str] = frozenset()
    allowed_tail_paths: tuple[str, ...] = field(default_factory=default_tail_paths)
    source: str = "defaults (no policy.json)"
    # Set when policy.json exists but was not used; the agent is then in lockdown.
    problem: str = ""
    # Where the policy lives (or would): named in the refusal of a shell command.
    path: str = FILENAME
    allow_shell: bool = False

    @property
    def lockdown(self) -> bool:
        return bool(self.problem)

    def refusal(self, kind: str, category: str) -> str | None:
        """Why this policy refuses the action, or None when it may run."""
        suffix = f" (lockdown: {self.problem})" if self.problem else f" ({self.source})"
        if category in self.forbid_categories:
            return f"the endpoint's local policy forbids {category} actions{suffix}"
        if category == p.CATEGORY_SHELL and not self.allow_shell:
            return NO_SHELL.format(path=self.path)
        if kind in self.forbid_kinds:
            return f"the endpoint's local policy forbids the action {kind!r}{suffix}"
        return None

    def tail_path_allowed(self, path: str) -> tuple[bool, str]:
        """(allowed, resolved path): symlinks and ``..`` resolved before matching the patterns."""
        resolved = os.path.realpath(path)
        for pattern in self.allowed_tail_paths:
            if fnmatch.fnmatch(resolved, _resolve_pattern(pattern)):
                return True, resolved
        return False, resolved

    def describe(self) -> dict:
        return {
            "source": self.source,
            "lockdown": self.lockdown,
            "problem": self.problem,
            "allow_shell": self.allow_shell,
            "forbid_categories": sorted(self.forbid_categories),
            "forbid_kinds": sorted(self.forbid_kinds),
            "allowed_tail_paths": list(self.allowed_tail_paths),
        }


def lockdown(problem: str, source: str) -> LocalPolicy:
    return LocalPolicy(
        forbid_categories=frozenset({p.CATEGORY_COMMAND, p.CATEGORY_SHELL}),
        forbid_kinds=frozenset(),
        allowed_tail_paths=(),
        source=source,
        problem=problem,
    )


def policy_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / FILENAME


def load_policy(state_dir: Path | str) -> LocalPolicy:
    """The policy in force now. Never raises: a problem yields the lockdown policy."""
    path = policy_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return LocalPolicy(path=str(path))
    except OSError as exc:
        return _refuse(f"cannot open {path}: {exc.strerror or exc}", path)
    try:
        st = os.fstat(fd)
        problem = _unsafe(st, path)
        if problem:
            return _refuse(problem, path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        return _refuse(f"cannot read {path}: {exc.strerror or exc}", path)
    finally:
        os.close(fd)
    if len(raw) > MAX_POLICY_BYTES:
        return _refuse(f"{path} is larger than {MAX_POLICY_BYTES} bytes", path)
    try:
        return replace(parse_policy(json.loads(raw.decode("utf-8")), source=str(path)), path=str(path))
    except (ValueError, UnicodeDecodeError) as exc:
        return _refuse(f"{path} is not a valid policy: {exc}", path)


def parse_policy(doc: object, *, source: str = "policy.json") -> LocalPolicy:
    """Build a policy from a parsed document; raises ValueError on anything unexpected."""
    if not isinstance(doc, dict):
        raise ValueError("the top level must be a JSON object")
    unknown = set(doc) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))} (known: {', '.join(KEYS)})")
    categories = _string_list(doc, "forbid_categories")
    bad = [c for c in categories if c not in p.CATEGORIES]
    if bad:
        raise ValueError(f"forbid_categories: unknown categories {bad} (known: {', '.join(p.CATEGORIES)})")
    kinds = _string_list(doc, "forbid_kinds")
    bad = [k for k in kinds if k not in p.ACTION_KINDS]
    if bad:
        raise ValueError(f"forbid_kinds: unknown action kinds {bad}")
    allow_shell = doc.get("allow_shell", False)
    if not isinstance(allow_shell, bool):
        raise ValueError("allow_shell must be true or false")
    if allow_shell and p.CATEGORY_SHELL in categories:
        raise ValueError('allow_shell is true but forbid_categories lists "shell"')
    tails = tuple(_string_list(doc, "allowed_tail_paths")) if "allowed_tail_paths" in doc else default_tail_paths()
    for pattern in tails:
        if not os.path.isabs(pattern):
            raise ValueError(f"allowed_tail_paths: {pattern!r} is not an absolute path pattern")
    return LocalPolicy(
        forbid_categories=frozenset(categories),
        forbid_kinds=frozenset(kinds),
        allowed_tail_paths=tails,
        source=source,
        allow_shell=allow_shell,
    )


def write_policy(state_dir: Path | str, doc: dict) -> Path:
    """Write ``policy.json`` (owner-only) after checking that it parses: what an installer or
    ``caisey demo`` uses to leave an explicit policy behind."""
    parse_policy(doc)
    path = policy_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path


class PolicyNotInUse(Exception):
    """policy.json exists but cannot be used (lockdown): it is not changed behind its author's back."""


# The Windows installer's ALLOW_SHELL property (packaging/windows/make_wxs.py): "1" allows shell
# commands, "0" forbids them, unset ("") leaves an existing policy.json as it is and writes
# ``"allow_shell": false`` where there is none. Nothing else is accepted.
INSTALLER_CHOICES: dict[str, bool | None] = {"1": True, "0": False, "": None}


def apply_installer_choice(state_dir: Path | str, value: str) -> str:
    """Leave the explicit local policy an installer was asked for; returns what it did (a sentence).

    The MSI runs this (``caisey-agent policy --msi-allow-shell=[ALLOW_SHELL]``) as LocalSystem on
    every install, upgrade and repair, before the service starts, so a freshly installed agent
    never runs without an explicit policy. An upgrade or repair that does not give ALLOW_SHELL keeps
    what the administrator has (the file's other keys are always kept). Raises ValueError for a
    value other than "0", "1" or "" and PolicyNotInUse when asked to change a file in lockdown;
    neither changes anything.
    """
    if value not in INSTALLER_CHOICES:
        raise ValueError(f"ALLOW_SHELL must be 0 or 1 (or not given), not {value!r}")
    choice = INSTALLER_CHOICES[value]
    path = policy_path(state_dir)
    current = load_policy(state_dir)
    exists = os.path.lexists(path)
    if choice is None:
        if exists:
            state = (
                f"not in use: {current.problem}"
                if current.lockdown
                else f"allow_shell {str(current.allow_shell).lower()}"
            )
            return f"ALLOW_SHELL not given: kept {path} as it is ({state})"
        write_policy(state_dir, {"allow_shell": False})
        return f'ALLOW_SHELL not given: wrote {path} with "allow_shell": false (no shell commands)'
    if current.lockdown:
        raise PolicyNotInUse(f"not changing {path}, which is not in use: {current.problem}")
    doc = json.loads(Path(path).read_text(encoding="utf-8")) if exists else {}
    doc["allow_shell"] = choice
    write_policy(state_dir, doc)
    return f'ALLOW_SHELL={value}: wrote {path} with "allow_shell": {str(choice).lower()}'


def _string_list(doc: dict, key: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings")
    return value


def _unsafe(st: os.stat_result, path: Path) -> str:
    """Why the file cannot be trusted, or "" (POSIX only: on Windows the state folder's ACL protects it)."""
    if sys.platform == "win32":
        return ""
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); make it owner-only (chmod 600)"
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path} is owned by uid {st.st_uid}, neither the agent's user (uid {os.geteuid()}) nor root"
    try:
        dst = os.stat(path.parent)
    except OSError:
        return ""
    if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
        return f"{path.parent} is writable by others"
    return ""


def _refuse(problem: str, path: Path) -> LocalPolicy:
    log.error("not using the local policy: %s; running in lockdown (diagnostics only, no file_tail)", problem)
    return lockdown(problem, str(path))


_GLOB_CHARS = set("*?[")


def _resolve_pattern(pattern: str) -> str:
    """Resolve symlinks in a pattern's literal leading folders (e.g. macOS /tmp -> /private/tmp)."""
    head, tail = pattern, []
    while head and any(c in _GLOB_CHARS for c in head):
        head, last = os.path.split(head)
        tail.append(last)
        if not last:
            break
    if not head or not tail:
        return os.path.realpath(pattern) if not any(c in _GLOB_CHARS for c in pattern) else pattern
    return os.path.join(os.path.realpath(head), *reversed(tail))
