"""A fifth downstream task, declared here and nowhere else, runs through the finetune and
evaluate stages: the registry, the recipe section, the keys, the tables and the report need no
edit to take a new task."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from finetune_fixtures import make_home

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.finetune.formats import Candidate, Example, Label
from mediswift.finetune.metrics import accuracy
from mediswift.finetune.registry import register
from mediswift.finetune.task import DownstreamTask, TableLayout, TaskData
from mediswift.sections import Grid, task_settings

ToySettings = task_settings(
    "ToySettings",
    url="file-set-by-the-recipe/",
    grid=Grid(batch_sizes=[8], learning_rates=[1e-3]),
    epochs=1,
    prompt_tokens=2,
)


@register
class Parity(DownstreamTask):
    """Is the number in the text odd or even? (A toy, from files the test writes.)"""

    name = "parity"
    metric_name = "accuracy"
    Settings = ToySettings
    upstream = "https://example.org/parity/"
    mirror_folder = "parity/"
    files = {"data": "parity.json"}
    table = TableLayout("table_parity", "Parity test accuracy (%)", "accuracy (%)", digits=1)

    def upstreams(self) -> dict[str, str]:
        return {}  # local files: nothing to mirror

    def load(self, files: dict[str, Path]) -> TaskData:
        rows = json.loads(files["data"].read_text())
        ex = [Example(str(i), f"number: {n}", self.target(_lab(n)), _lab(n)) for i, n in rows]
        return TaskData({"train": ex[:24], "dev": ex[24:32], "test": ex[32:]}, [self.final_stage()])

    def target(self, label: Label) -> str:
        return f"the number is {label}."

    def all_targets(self) -> list[str]:
        return [self.target(x) for x in ("odd", "even")]

    def candidates(self, chosen: Label | None) -> list[Candidate]:
        return [Candidate(self.target(x), x, True) for x in ("odd", "even")]

    def parse(self, generated: str) -> Label | None:
        words = generated.lower().split()
        return next((w.strip(".") for w in words if w.strip(".") in ("odd", "even")), None)

    def metric(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> float:
        return accuracy(preds, golds)

    def majority(self, train_labels: Sequence[Label]) -> Label:
        return Counter(train_labels).most_common(1)[0][0]


def _lab(n: int) -> str:
    return "odd" if n % 2 else "even"


@pytest.mark.slow
def test_a_new_task_runs_from_its_module_alone(
    prefect_harness, mirror_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "parity-data"
    data.mkdir()
    rng = random.Random(0)
    (data / "parity.json").write_text(json.dumps([[i, rng.randrange(100)] for i in range(44)]))
    recipe_text = f"""name: plugin-test
finetune:
  seeds: [0]
  patience: 1
  max_len: 128
  concurrency: 1
  tasks:
    parity: {{url: "{data}/"}}
"""
    # The run is given the mirror (the recipe names none); every later command finds its
    # outputs without it: the home remembers the source.
    recipe, home = make_home(tmp_path, mirror_dir, recipe_text, mirror_in_recipe=False)
    mediswift(
        recipe=str(recipe), stages=["finetune", "evaluate"], home=str(home), mirror=str(mirror_dir)
    )
    arts = plan(load_recipe(str(recipe), home=home), home)
    ft = arts["finetune"].manifest()
    assert list(ft["tasks"]) == ["parity"]
    assert ft["tasks"]["parity"]["counts"] == {"train": 24, "dev": 8, "test": 12}
    assert [(s["variant"], s["task"], len(s["points"])) for s in ft["sweeps"]] == [
        ("tiny-dense", "parity", 1),
        ("tiny-s50", "parity", 1),
    ]
    assert (home / "raw" / "parity" / "parity.json").is_file()
    ev = arts["evaluate"].manifest()
    table = (arts["evaluate"].path / ev["tables"]["parity"]["md"]).read_text()
    assert table.startswith("**Parity test accuracy") and "majority class" in table

    # The chosen point and its variant leave the pipeline as Hugging Face model directories.
    from mediswift.cli import main

    base = ["--recipe", str(recipe), "--home", str(home), "--variant", "tiny-s50"]
    assert main(["export", *base, "--task", "parity", "--out", str(tmp_path / "ft")]) == 0
    assert main(["export", *base, "--out", str(tmp_path / "pt")]) == 0
    assert (tmp_path / "ft" / "soft_prompt.safetensors").is_file()
    assert "parity" in (tmp_path / "ft" / "README.md").read_text()
    assert not (tmp_path / "pt" / "soft_prompt.safetensors").exists()
    assert main(["export", *base[:4], "--variant", "nope", "--out", str(tmp_path / "x")]) == 2
