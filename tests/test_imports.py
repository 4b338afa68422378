"""The import rules: no cycles, every library module placed in a layer, light recipes."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mediswift", "flows", "tasks")


def strongly_connected(adj: dict[str, list[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(adj[w])))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)
    ours = [m for m in graph.modules if m.split(".")[0] in PACKAGES]
    adj = {m: [i for i in graph.find_modules_directly_imported_by(m) if i in ours] for m in ours}
    assert strongly_connected(adj) == []


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_every_library_module_has_a_layer():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(
        c["layers"]
        for c in config["contracts"]
        if c["name"] == "dependencies point down the stage order"
    )
    placed = {m.strip() for layer in layers for m in layer.split(":")}
    top = {
        f"mediswift.{p.stem}"
        for p in (REPO / "mediswift").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert top - placed == set()


@pytest.mark.subprocess
def test_validating_a_recipe_does_not_import_torch():
    code = (
        "import sys\n"
        "from mediswift.config import load_recipe\n"
        "for name in ('demo', 'paper'):\n"
        "    cfg = load_recipe(name)\n"
        "    [cfg.finetune.task(t) for t in cfg.finetune.tasks]\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


FLOW_FUNCTION_LINES = 40  # flows order stages and submit units; their logic is the library's


def test_flows_only_orchestrate_in_short_functions() -> None:
    """No function of `flows/` is longer than 40 lines, and none opens, moves or deletes files
    itself (the library does: `mediswift.stages`)."""
    import ast

    long, touching = [], []
    for path in sorted((REPO / "flows").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > FLOW_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
            if isinstance(node, ast.Attribute) and node.attr in (
                "unlink", "rmtree", "rename", "replace", "write_text", "read_text", "open",
            ):  # fmt: skip
                touching.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.Name) and node.id == "open":
                touching.append(f"{path.name}:{node.lineno} open")
    assert not long, long
    assert not touching, touching
