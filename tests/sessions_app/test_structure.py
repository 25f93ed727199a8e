"""The layers of sessions_app's services and selectors: no module imports, directly or through
others, a module that imports it back. Function-local imports count (import-linter counts them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sessions_app

ROOT = Path(sessions_app.__file__).parent


def _graph(package: str) -> dict[str, set[str]]:
    modules = {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    prefix = f"sessions_app.{package}"
    for module in modules:
        tree = ast.parse((ROOT / package / f"{module}.py").read_text())
        for node in ast.walk(tree):  # every import, at the top or inside a function
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == prefix:
                    graph[module] |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith(prefix + "."):
                    graph[module].add(node.module.removeprefix(prefix + ".").split(".")[0])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(prefix + "."):
                        graph[module].add(alias.name.removeprefix(prefix + ".").split(".")[0])
        graph[module].discard(module)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


@pytest.mark.parametrize("package", ["services", "selectors"])
def test_no_import_cycle_between_modules(package):
    assert _cycle(_graph(package)) is None, " -> ".join(_cycle(_graph(package)) or [])


def test_actions_and_approvals_no_longer_import_each_other():
    graph = _graph("services")
    assert "approvals" not in graph["actions"], "actions asks approvals only through the prompting ledger"
    assert {"actions", "prompting"} <= graph["approvals"]
    assert not {"actions", "approvals"} & graph["prompting"]


def test_the_cycle_detector_sees_a_function_local_cycle(tmp_path, monkeypatch):
    package = tmp_path / "fake"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from sessions_app.fake import b\n")
    (package / "b.py").write_text("from sessions_app.fake.a import f\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert _cycle(_graph("fake")) == ["a", "b", "a"]
