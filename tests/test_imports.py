"""The import rules: no cycles, every library module placed in a layer, light recipes."""

from __future__ import annotations

import re
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
    placed = {m.strip() for layer in layers for m in re.split(r"[:|]", layer)}
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
# What a flow may not do itself: MLflow (tasks and the library log), dispatch by name, files.
FLOW_FORBIDDEN_IMPORTS = ("mediswift.tracking", "mlflow", "importlib", "shutil", "sqlite3")
FILE_CALLS = {
    "unlink", "rmtree", "rename", "replace", "write_text", "read_text", "write_bytes",
    "read_bytes", "open", "mkdir", "touch", "ensure", "write_manifest", "write_atomic",
}  # fmt: skip


def flow_violations(source: str, name: str) -> list[str]:
    """What a flow module does beyond ordering work: long functions, forbidden imports, MLflow
    runs, file operations (by what it imports and calls, not by the names it mentions)."""
    import ast

    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if lines > FLOW_FUNCTION_LINES:
                out.append(f"{name}:{node.name} is {lines} lines")
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        out += [
            f"{name}:{node.lineno} imports {m}"
            for m in modules
            if any(m == f or m.startswith(f + ".") for f in FLOW_FORBIDDEN_IMPORTS)
        ]
        if isinstance(node, ast.Call):
            f = node.func
            called = (
                f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            )
            if called in FILE_CALLS:
                out.append(f"{name}:{node.lineno} calls {called}")
            if called in ("Tracker", "RunLogger", "start_run", "import_module"):
                out.append(f"{name}:{node.lineno} calls {called}")
    return out


def test_flows_only_order_work() -> None:
    """No function of `flows/` is longer than 40 lines, and no flow module imports MLflow or
    the tracking layer, dispatches by name or touches files itself."""
    found = [
        v
        for path in sorted((REPO / "flows").rglob("*.py"))
        for v in flow_violations(path.read_text(), path.name)
    ]
    assert not found, found


def test_the_flow_check_catches_what_it_forbids() -> None:
    bad = (
        "import importlib\n"
        "from mediswift.tracking import Tracker\n"
        "def run(cfg, home, out):\n"
        "    Tracker('sqlite:///x', 'e')\n"
        "    out.ensure()\n"
        "    (home / 'x').write_text('y')\n"
        "    with open(home / 'z') as f:\n"
        "        pass\n"
    )
    found = flow_violations(bad, "bad.py")
    assert len(found) == 6, found


def test_stage_names_are_listed_in_one_place() -> None:
    """No module spells out a list of stage names: order comes from `flows.registry.STAGES`."""
    import ast

    from flows.registry import stage_names

    names = set(stage_names())
    lists = []
    for pkg in ("mediswift", "flows", "tasks"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Tuple | ast.List | ast.Set):
                    spelled = {
                        e.value
                        for e in node.elts
                        if isinstance(e, ast.Constant) and e.value in names
                    }
                    if len(spelled) >= 3:
                        lists.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not lists, lists
