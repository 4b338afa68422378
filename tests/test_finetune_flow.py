"""The finetune and evaluate stages inside the `mediswift` flow (Prefect test harness).

The inputs are built by hand in their contract formats: the mirror's PubMedQA and HoC files under
`<home>/raw` with a download manifest, a vocab artifact holding a small tokenizer, and a
pre-training manifest listing two tiny checkpoints (dense, and 50% sparse with masks). Then a
small grid (2 seeds) runs end to end, the tables come out, and a re-run trains nothing again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import mediswift
from mediswift.config import load_recipe
from mediswift.finetune.hoc import HoC, hoc_splits
from mediswift.finetune.pubmedqa import PubMedQA, pqal_splits
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.plan import plan
from mediswift.text import moses
from mediswift.text.bpe import learn_bpe
from mediswift.text.tokenizer import Tokenizer, write_tokenizer_config
from mediswift.tracking import default_tracking_uri
from mediswift.train.checkpoint import save_checkpoint

RECIPE = """name: finetune-test
finetune:
  seeds: [0, 1]
  patience: 1
  max_len: 128
  eval_batch_size: 12
  concurrency: 2
  tasks:
    pubmedqa:
      grid: {batch_sizes: [8], learning_rates: [1.0e-3, 3.0e-4]}
      epochs: 1
      max_train_examples: 16
      max_eval_examples: 12
    hoc:
      grid: {batch_sizes: [8], learning_rates: [1.0e-3]}
      epochs: 1
      max_train_examples: 16
      max_eval_examples: 12
"""


@pytest.fixture(scope="module")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_home(root: Path, mirror: Path, recipe_text: str = RECIPE) -> tuple[Path, Path]:
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe_text + f"mirror: {mirror}\n")
    home = root / "home"
    arts = plan(load_recipe(str(recipe)), home)
    # vocab: a small tokenizer learned on task text (the tasks' files come from the mirror).
    vdir = arts["vocab"].ensure().path
    pqa = pqal_splits(
        mirror / "pubmedqa" / "ori_pqal.json", mirror / "pubmedqa" / "test_ground_truth.json"
    )
    hoc = hoc_splits(*(mirror / "hoc" / f"{s}.tsv" for s in ("train", "dev", "test")))
    texts = [e.source + " " + e.target for e in pqa["train"][:100] + hoc["train"][:60]]
    texts += HoC().all_targets() + PubMedQA().all_targets()
    learn_bpe((moses.moses_tokenize(t) for t in texts), vdir / "bpe.model", 600)
    write_tokenizer_config(vdir)
    tok = Tokenizer.load(vdir)
    arts["vocab"].write_manifest(
        {"vocab_size": tok.vocab_size, "hash": tok.hash, "special_ids": tok.special_ids}
    )
    # pretrain: a dense and a 50% sparse tiny checkpoint.
    variants = []
    for name, s in (("tiny-dense", 0.0), ("tiny-s50", 0.5)):
        torch.manual_seed(0)
        lm = GPT(
            GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=tok.vocab_size, block_size=128)
        )
        masks = {}
        if s:
            g = torch.Generator().manual_seed(0)
            masks = {
                n: torch.rand(lm.get_parameter(n).shape, generator=g) >= s
                for n in lm.matrix_names()
            }
            with torch.no_grad():
                for n, m in masks.items():
                    lm.get_parameter(n).mul_(m)
        rel = f"pretrain/ckpt/{name}"
        save_checkpoint(home / rel, lm, masks=masks or None)
        non_emb = lm.num_params(non_embedding=True)
        variants.append(
            {
                "name": name,
                "model": "tiny",
                "sparsity": s,
                "method": "static",
                "checkpoint": rel,
                "loss_curve": f"{rel}.csv",
                "total_params": lm.num_params(),
                "non_embedding_params": non_emb,
                "active_params": lm.num_params() - int(s * non_emb),
                "active_non_embedding_params": int((1 - s) * non_emb),
                "train_flops": 1e12 * (1 - 0.4 * s),
                "flops_ratio": 1 - 0.4 * s,
            }
        )
    arts["pretrain"].ensure().write_manifest(
        {"variants": variants, "loss_plot": "none.png", "table": "none.md"}
    )
    return recipe, home


@pytest.mark.slow
def test_finetune_and_evaluate_stages(
    prefect_harness, mirror_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recipe, home = make_home(tmp_path, mirror_dir)
    out = mediswift(recipe=str(recipe), stages=["finetune", "evaluate"], home=str(home))
    arts = plan(load_recipe(str(recipe)), home)
    ft = arts["finetune"].manifest()
    assert [(s["variant"], s["task"]) for s in ft["sweeps"]] == [
        ("tiny-dense", "pubmedqa"),
        ("tiny-dense", "hoc"),
        ("tiny-s50", "pubmedqa"),
        ("tiny-s50", "hoc"),
    ]
    assert [len(s["points"]) for s in ft["sweeps"]] == [4, 2, 4, 2]
    assert ft["tasks"]["pubmedqa"]["full_counts"] == {"train": 450, "dev": 50, "test": 500}
    assert ft["tasks"]["hoc"]["full_counts"] == {"train": 1295, "dev": 186, "test": 371}
    for s in ft["sweeps"]:
        for p in s["points"]:
            assert set(p["metrics"]) == {"dev_generate", "test_generate", "dev_score", "test_score"}
            assert (home / p["unit"] / "checkpoint" / "model.safetensors").is_file()
    # MLflow: one parent run per sweep, one child per grid point.
    client = MlflowClient(default_tracking_uri(home))
    for s in ft["sweeps"]:
        children = client.search_runs(
            [client.get_run(s["parent_run_id"]).info.experiment_id],
            f"tags.mlflow.parentRunId = '{s['parent_run_id']}'",
        )
        assert sorted(r.info.run_id for r in children) == sorted(
            p["mlflow_run_id"] for p in s["points"]
        )
    # evaluate: both tables, the plot, a results list with the majority baselines.
    ev = arts["evaluate"].manifest()
    assert out["evaluate"] == str(arts["evaluate"].path)
    for task in ("pubmedqa", "hoc"):
        for kind in ("md", "csv"):
            assert (arts["evaluate"].path / ev["tables"][task][kind]).is_file()
    assert (arts["evaluate"].path / ev["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert len(ev["results"]) == 4
    pqa = [r for r in ev["results"] if r["task"] == "pubmedqa"]
    assert {r["variant"] for r in pqa} == {"tiny-dense", "tiny-s50"}
    for r in pqa:
        assert r["selected"]["score"]["seeds"] == [0, 1]
        assert r["selected"]["score"]["lr"] in (1e-3, 3e-4)
    table3 = (arts["evaluate"].path / ev["tables"]["pubmedqa"]["md"]).read_text()
    assert "majority class" in table3 and "tiny-s50" in table3
    printed = caplog.text  # the flow logs its prints
    assert "Table 3" in printed and "Table 4" in printed

    # A re-run of the sweep (stage output removed) trains no grid point again.
    units = [home / p["unit"] / "metrics.json" for s in ft["sweeps"] for p in s["points"]]
    stamps = [u.stat().st_mtime_ns for u in units]
    arts["finetune"].manifest_path.unlink()
    mediswift(recipe=str(recipe), stages=["finetune"], home=str(home))
    assert [u.stat().st_mtime_ns for u in units] == stamps
    again = arts["finetune"].manifest()
    # ... and files its sweeps under the same parent runs as before.
    assert [s["parent_run_id"] for s in again["sweeps"]] == [
        s["parent_run_id"] for s in ft["sweeps"]
    ]
    assert [p["metrics"] for s in again["sweeps"] for p in s["points"]] == [
        p["metrics"] for s in ft["sweeps"] for p in s["points"]
    ]
