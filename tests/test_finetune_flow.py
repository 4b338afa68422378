"""The finetune and evaluate stages inside the `mediswift` flow (Prefect test harness).

The inputs are built by hand in their contract formats: the mirror's PubMedQA and HoC files under
`<home>/raw` with a download manifest, a vocab artifact holding a small tokenizer, and a
pre-training manifest listing two tiny checkpoints (dense, and 50% sparse with masks). Then a
small grid (2 seeds) runs end to end, the tables come out, and a re-run trains nothing again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from finetune_fixtures import make_home
from mlflow.tracking import MlflowClient

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.tracking import default_tracking_uri


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
    # One line per task: each variant beside the baseline (the tables are the report's).
    assert "results on test" in printed
    assert re.search(r"pubmedqa \(accuracy, [a-z ]+\): tiny-", printed)
    assert re.search(r"hoc \(micro_f1, [a-z ]+\): tiny-", printed)
    # Progress while the grid points run: a count, a rate and an ETA.
    assert re.search(r"finetune: 0/(\d+) points done \(0\.0%\), 0\.0 points/min, ETA \?", printed)
    assert re.search(r"finetune: (\d+)/\1 points done \(100\.0%\), [\d.]+ points/min", printed)

    # A re-run of the sweep (stage output removed) trains no grid point again.
    units = [home / p["unit"] / "metrics.json" for s in ft["sweeps"] for p in s["points"]]
    stamps = [u.stat().st_mtime_ns for u in units]
    arts["finetune"].manifest_path.unlink()
    mediswift(recipe=str(recipe), stages=["finetune"], home=str(home))
    assert [u.stat().st_mtime_ns for u in units] == stamps
    # Points found done count as done from the start, and add nothing to the rate.
    assert (
        f"finetune: {len(units)}/{len(units)} points done (100.0%), 0.0 points/min" in caplog.text
    )
    again = arts["finetune"].manifest()
    # ... and files its sweeps under the same parent runs as before.
    assert [s["parent_run_id"] for s in again["sweeps"]] == [
        s["parent_run_id"] for s in ft["sweeps"]
    ]
    assert [p["metrics"] for s in again["sweeps"] for p in s["points"]] == [
        p["metrics"] for s in ft["sweeps"] for p in s["points"]
    ]
