"""The repro-claims-gpu recipe stays valid without a GPU: its dry run shows its CUDA devices and
its compared arms, and the same recipe (every arm and seed, every stage, HoC, the evaluate stage,
the report with its claims and an export) runs end to end on CPU at a small fraction of its
steps and data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.cli import main
from mediswift.config import load_recipe, recipe_path

pytestmark = pytest.mark.slow


def test_the_gpu_recipe_dry_run_shows_cuda_and_the_arms(tmp_path, capsys) -> None:
    assert main(["run", "--recipe", "repro-claims-gpu", "--dry-run", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "devices: pre-training cuda, fine-tuning cuda" in out
    assert "compared (equal active non-embedding parameters): deep-s75 vs tiny-dense" in out
    assert "compared (equal active non-embedding parameters): mini-s75 vs micro-dense" in out
    assert "seeds [0, 1, 2]" in out


def smoke_recipe(tmp_path: Path) -> Path:
    """The GPU recipe on CPU: the same arms, seeds, stages and tasks, a few steps on a sliver of
    the data (a recipe file, as a user would write one)."""
    recipe = yaml.safe_load(recipe_path("repro-claims-gpu").read_text())
    recipe["name"] = "repro-claims-gpu-smoke"
    recipe["download"] |= {"pubmed_max_files": 1, "pmc_max_articles": 4, "extra_corpora": []}
    recipe["vocab"] = {"vocab_size": 600, "sample_sentences": 20000, "workers": 1}
    recipe["tokenize"] = {"workers": 1}
    recipe["pretrain"] |= {"device": "cpu", "seq_len": 64, "global_batch": 8, "micro_batch": 8,
                           "steps": 6, "eval_every": 3, "eval_batches": 2, "checkpoint_every": 6,
                           "log_every": 2, "measure_peak": False}  # fmt: skip
    recipe["finetune"] |= {"device": "cpu", "max_len": 64, "concurrency": 1, "torch_threads": 1}
    recipe["finetune"]["tasks"]["hoc"] |= {"epochs": 1, "max_train_examples": 16,
                                           "max_eval_examples": 16}  # fmt: skip
    recipe["tracking"] = {"log_models": False}  # registering 19 models would be most of it
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_gpu_recipe_runs_end_to_end_on_cpu(prefect_harness, tmp_path, mirror_dir) -> None:
    recipe, home = smoke_recipe(tmp_path), tmp_path / "home"
    state = mediswift(recipe=str(recipe), home=str(home), mirror=str(mirror_dir),
                      return_state=True)  # fmt: skip
    assert state.is_completed(), state
    cfg = load_recipe(str(recipe), mirror=str(mirror_dir))
    arts = plan(cfg, home)
    variants = arts["pretrain"].manifest()["variants"]
    assert len(variants) == 19 and {v["arm"] for v in variants} >= {"deep-s75", "micro-dense"}
    report = (home / "report" / cfg.name / "report.md").read_text()
    claims = report.split("## The paper's claims at this scale", 1)[1]
    assert "deep-s75 vs tiny-dense" in claims and "| 2 |" in claims
    out = tmp_path / "export"
    assert main(["export", "--recipe", str(recipe), "--home", str(home), "--variant",
                 "deep-s75-seed0", "--out", str(out)]) == 0  # fmt: skip
    assert (out / "config.json").is_file()
