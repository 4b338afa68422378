"""Grid selection over seeds, Tables 3/4 and the accuracy-vs-FLOPs plot from manifests."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from mediswift.config import FinetuneConfig, Grid
from mediswift.finetune.grid import grid_points, select
from mediswift.finetune.tables import write_report
from mediswift.manifests import FinetuneManifest, PretrainManifest


def point(batch: int, lr: float, seed: int, dev: float, test: float) -> dict:
    metrics = {"dev_score": dev, "test_score": test, "dev_generate": test, "test_generate": dev}
    return {"batch_size": batch, "lr": lr, "seed": seed, "metrics": metrics}


def test_grid_points_cover_the_grid() -> None:
    paper = FinetuneConfig()
    assert len(grid_points(paper.tasks["pubmedqa"].grid, paper.seeds)) == 4 * 4 * 3  # the paper's
    assert len(grid_points(paper.tasks["hoc"].grid, paper.seeds)) == 3 * 4 * 3
    grid = Grid(batch_sizes=[16, 32], learning_rates=[1e-5])
    assert [(p.batch_size, p.lr, p.seed) for p in grid_points(grid, [0, 1, 2])] == [
        (16, 1e-5, 0),
        (16, 1e-5, 1),
        (16, 1e-5, 2),
        (32, 1e-5, 0),
        (32, 1e-5, 1),
        (32, 1e-5, 2),
    ]


def test_select_by_mean_dev_over_seeds_reports_test_mean_std() -> None:
    pts = [
        # (8, 1e-4): one lucky seed, lower mean dev
        point(8, 1e-4, 0, 0.90, 0.50),
        point(8, 1e-4, 1, 0.40, 0.52),
        point(8, 1e-4, 2, 0.41, 0.49),
        # (16, 5e-5): best mean dev
        point(16, 5e-5, 0, 0.70, 0.60),
        point(16, 5e-5, 1, 0.72, 0.66),
        point(16, 5e-5, 2, 0.71, 0.63),
    ]
    s = select(pts, "score")
    assert (s["batch_size"], s["lr"]) == (16, 5e-5)
    assert s["seeds"] == [0, 1, 2]
    assert s["test_mean"] == pytest.approx(0.63)
    assert s["test_std"] == pytest.approx(statistics.stdev([0.60, 0.66, 0.63]))
    assert s["dev_mean"] == pytest.approx(0.71)
    # Each mode selects on its own dev metric: here generate's dev is score's test.
    assert (select(pts, "generate")["batch_size"]) == 16
    with pytest.raises(ValueError):
        select([], "score")


def _manifests() -> tuple[FinetuneManifest, PretrainManifest]:
    finetune, pretrain = _manifest_dicts()
    return FinetuneManifest.model_validate(finetune), PretrainManifest.model_validate(pretrain)


def _manifest_dicts() -> tuple[dict, dict]:
    pretrain = {
        "variants": [
            {
                "name": n,
                "model": "tiny",
                "sparsity": s,
                "active_non_embedding_params": int(4e5 * (1 - s)),
                "active_params": int(1e6 - 4e5 * s),
                "train_flops": 1e15 * (1 - 0.5 * s),
                "checkpoint": f"pretrain/units/{n}/final",
                "loss_curve": f"pretrain/units/{n}/loss.csv",
            }
            for n, s in (("tiny-dense", 0.0), ("tiny-s50", 0.5), ("tiny-s75", 0.75))
        ],
        "loss_plot": "pretrain/x/loss.png",
        "table": "pretrain/x/table2.md",
    }
    sweeps = []
    for i, v in enumerate(pretrain["variants"]):
        for task in ("pubmedqa", "hoc"):
            pts = [
                point(16, lr, seed, 0.5 + 0.01 * i + lr * 100, 0.55 + 0.02 * i + 0.01 * seed)
                | {"unit": f"finetune/units/{i}{task}{lr}{seed}", "steps": 3, "best_epoch": 1}
                for lr in (1e-4, 5e-5)
                for seed in (0, 1, 2)
            ]
            sweeps.append(
                {
                    "variant": v["name"],
                    "task": task,
                    "metric": "m",
                    "parent_run_id": None,
                    "points": pts,
                }
            )
    data = {
        "data": "finetune/units/d",
        "metric": "m",
        "counts": {},
        "full_counts": {},
        "stages": [],
    }
    tasks = {
        "pubmedqa": {"majority": {"label": "yes", "dev": 0.5, "test": 0.552}, **data},
        "hoc": {"majority": {"label": [8], "dev": 0.3, "test": 0.31}, **data},
    }
    finetune = {
        "sweeps": sweeps,
        "tasks": tasks,
        "modes": ["generate", "score"],
        "torch_threads": 1,
    }
    return finetune, pretrain


def test_tables_and_plot(tmp_path: Path) -> None:
    finetune, pretrain = _manifests()
    report, _ = write_report(finetune, pretrain, ["generate", "score"], "score", tmp_path)
    rep = report.model_dump()
    assert set(rep["tables"]) == {"pubmedqa", "hoc"}
    md = (tmp_path / rep["tables"]["pubmedqa"]["md"]).read_text()
    assert md.startswith("**Table 3") and "| majority class |" in md and "55.2" in md
    rows = list(
        csv.DictReader(io.StringIO((tmp_path / rep["tables"]["pubmedqa"]["csv"]).read_text()))
    )
    assert [r["model"] for r in rows] == ["tiny-dense", "tiny-s50", "tiny-s75", "majority class"]
    dense = rows[0]
    assert dense["sparsity"] == "0%" and dense["active size"] == "400K"
    # Dense: lr 1e-4 has the better dev; test over seeds 0.55, 0.56, 0.57 -> 56.0 ± 1.0.
    assert dense["constrained scoring"] == "56.0 ± 1.0"
    assert dense["constrained scoring: batch, lr (n seeds)"] == "16, 0.0001 (3)"
    hoc = (tmp_path / rep["tables"]["hoc"]["md"]).read_text()
    assert hoc.startswith("**Table 4") and "31.00" in hoc
    assert (tmp_path / rep["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert len(rep["results"]) == 6
    r = rep["results"][0]
    assert r["selected"]["score"]["test_per_seed"] == pytest.approx([0.55, 0.56, 0.57])
    assert r["majority_test"] == 0.552


def test_baseline_row_has_its_interval_and_only_the_modes_models_have(tmp_path: Path) -> None:
    finetune, pretrain = _manifest_dicts()
    finetune["tasks"]["hoc"]["majority"]["test_ci95"] = [0.25, 0.37]
    for sweep in finetune["sweeps"]:  # HoC as a task without a candidate grammar: never scored
        if sweep["task"] == "hoc":
            for p in sweep["points"]:
                p["metrics"] = {k: v for k, v in p["metrics"].items() if "score" not in k}
    report, _ = write_report(
        FinetuneManifest.model_validate(finetune),
        PretrainManifest.model_validate(pretrain),
        ["generate", "score"],
        "generate",
        tmp_path,
    )
    text = (tmp_path / report.tables["hoc"].csv).read_text()
    base = list(csv.DictReader(io.StringIO(text)))[-1]
    assert base["greedy generation"] == "31.00"
    assert base["greedy generation: 95% CI"] == "[25.00, 37.00]"
    assert base["constrained scoring"] == "-" and base["constrained scoring: 95% CI"] == "-"


def test_unknown_variant_is_an_error(tmp_path: Path) -> None:
    finetune, pretrain = _manifests()
    pretrain.variants = pretrain.variants[:1]
    with pytest.raises(ValueError, match="unknown variant"):
        write_report(finetune, pretrain, ["score"], "score", tmp_path)


def test_degenerate_seed_is_not_chosen_while_a_clean_choice_exists() -> None:
    pts = [
        point(8, 1e-4, 0, 0.90, 0.50) | {"degenerate": {"dev_score": "constant"}},
        point(8, 1e-4, 1, 0.90, 0.52),
        point(16, 5e-5, 0, 0.70, 0.60),
        point(16, 5e-5, 1, 0.72, 0.66),
    ]
    s = select(pts, "score")
    assert (s["batch_size"], s["avoided_degenerate"], s["degenerate_seeds"]) == (16, 1, 0)
    # Every choice degenerate: the best is still chosen, and flagged.
    pts[2]["degenerate"] = {"dev_score": "no label"}
    s = select(pts, "score")
    assert (s["batch_size"], s["degenerate_seeds"]) == (8, 1)


def test_degenerate_predictions_and_bootstrap_interval() -> None:
    from mediswift.finetune.metrics import accuracy
    from mediswift.finetune.stats import bootstrap_interval, degenerate

    assert degenerate(["yes"] * 5) == "constant"
    assert degenerate([None, (), None]) == "no label"
    assert degenerate(["yes", "no", "yes"]) is None
    # Unparsed generations (None) are not a second label: the demo's greedy PubMedQA dev rows.
    assert degenerate(["yes"] * 44 + [None] * 6) == "constant"
    assert degenerate(["yes"] + [None] * 9) == "constant"
    assert degenerate([(), ("a",), None]) is None  # the empty label is a real answer
    golds = ["yes", "no"] * 50
    good = list(golds[:80]) + ["maybe"] * 20  # 80% correct
    lo, hi = bootstrap_interval(accuracy, [good, good], golds, resamples=300)
    assert lo < 0.8 < hi and lo > 0.6 and hi < 0.95
    # Twice the examples (same accuracy): a narrower interval.
    lo2, hi2 = bootstrap_interval(accuracy, [good * 2], golds * 2, resamples=300)
    assert hi2 - lo2 < hi - lo


def test_two_sizes_two_sparsities_make_cross_size_tables_and_figures(tmp_path: Path) -> None:
    finetune, pretrain = _manifest_dicts()
    small = [
        dict(v, name=v["name"].replace("tiny", "small"), model="small",
             active_non_embedding_params=v["active_non_embedding_params"] * 8,
             train_flops=v["train_flops"] * 8)
        for v in pretrain["variants"][:2]
    ]  # fmt: skip
    pretrain["variants"] = pretrain["variants"][:2] + small
    finetune["sweeps"] = [
        dict(s, variant=s["variant"].replace("tiny", size))
        for size in ("tiny", "small")
        for s in finetune["sweeps"]
        if s["variant"] in ("tiny-dense", "tiny-s50")
    ]
    report, _ = write_report(
        FinetuneManifest.model_validate(finetune),
        PretrainManifest.model_validate(pretrain),
        ["score"],
        "score",
        tmp_path,
    )
    rows = list(csv.DictReader(io.StringIO((tmp_path / report.tables["hoc"].csv).read_text())))
    assert [r["model"] for r in rows] == [
        "small-dense", "small-s50", "tiny-dense", "tiny-s50", "most frequent hallmark"
    ]  # fmt: skip
    assert (tmp_path / report.size_plot).read_bytes()[:4] == b"\x89PNG"
    assert (
        "among those with no seed whose dev predictions are degenerate"
        in (tmp_path / report.tables["hoc"].md).read_text()
    )


def test_hoc_reports_biogpt_convention_beside_its_metric(tmp_path: Path) -> None:
    # Every HoC point keeps test predictions: gold (), (1,), (1, 2); over 11 classes with
    # "empty" seed 0 scores 6/7 (TP 3, FN 1), seed 1 6/8 (FP hallmark 3, FN "empty"), seed 2 1.
    finetune, pretrain = _manifests()
    preds = {0: [[], [1], [2]], 1: [[3], [1], [1, 2]], 2: [[], [1], [1, 2]]}
    for sweep in finetune.sweeps:
        for p in sweep.points if sweep.task == "hoc" else []:
            rows = [
                {"id": i, "split": "test", "gold": g, "pred": pr}
                for i, g, pr in zip("abc", [[], [1], [1, 2]], preds[p.seed], strict=True)
            ]
            for mode in ("score", "generate"):
                path = tmp_path / p.unit / f"predictions_{mode}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "evaluate"
    report, _ = write_report(finetune, pretrain, ["generate", "score"], "score", out, tmp_path)
    hoc = next(r for r in report.results if r.task == "hoc").selected["score"]
    extra = hoc.extra_metrics["micro_f1_biogpt"]
    assert extra.test_per_seed == pytest.approx([6 / 7, 6 / 8, 1.0])
    assert extra.test_mean == pytest.approx((6 / 7 + 6 / 8 + 1.0) / 3)
    assert extra.test_ci95 is not None and hoc.test_ci95 is not None
    # The main metric and its selection are the finetune stage's, as before.
    assert hoc.test_per_seed == pytest.approx([0.55, 0.56, 0.57])
    assert all(not r.selected["score"].extra_metrics for r in report.results if r.task != "hoc")
    # A labelled row under each model's row (a column would make the table wider than a page).
    rows = list(csv.DictReader(io.StringIO((out / report.tables["hoc"].csv).read_text())))
    label = "micro-F1, BioGPT convention: 11 classes incl. empty"
    assert [r["model"] for r in rows[:2]] == ["tiny-dense", f"tiny-dense ({label})"]
    assert rows[1]["constrained scoring"] == f"{100 * extra.test_mean:.2f} ± 12.54"
    assert rows[1]["constrained scoring: 95% CI"].startswith("[")
    assert rows[1]["constrained scoring: batch, lr (n seeds)"] == "16, 0.0001 (3)"
    assert rows[0]["constrained scoring"] == "56.00 ± 1.00"
    assert [r["model"] for r in rows].count("most frequent hallmark") == 1 and len(rows) == 7
    md = (out / report.tables["hoc"].md).read_text()
    assert "10 hallmark classes" in md.splitlines()[0]
    assert f"| tiny-dense ({label}) | 0% | 400K | 1e+15 | 86.90 ± 12.54 |" in md
    pubmedqa = (out / report.tables["pubmedqa"].csv).read_text()
    assert "BioGPT" not in pubmedqa and len(pubmedqa.splitlines()) == 5
