"""The download stage inside a Prefect flow (test harness), reading the mirror as a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from flows.stages import download as stage
from mediswift.config import load_recipe
from mediswift.plan import plan


@pytest.fixture(scope="session")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _cfg(mirror_dir: Path):
    # A path of its own (not a recipe file) so the test does not depend on the demo recipe.
    overrides = {
        "download": {
            "pubmed_max_files": 2,
            "pmc_max_articles": 7,
            "pmc_batch_size": 3,
            "extra_corpora": ["corpus/biomed_text.jsonl"],
        }
    }
    return load_recipe_any(overrides, str(mirror_dir))


def load_recipe_any(overrides: dict, mirror: str):
    from mediswift.config import PipelineConfig

    try:
        return load_recipe("demo", overrides, mirror)
    except FileNotFoundError:
        return PipelineConfig.model_validate({"mirror": mirror, **overrides})


def test_stage_runs_in_a_flow(prefect_harness, mirror_dir: Path, tmp_path: Path):
    cfg = _cfg(mirror_dir)
    home = tmp_path / "home"
    out = plan(cfg, home)["download"]

    @flow(name="download-stage-test")
    def run_stage() -> dict:
        return stage.run(cfg, home, out, {})

    manifest = run_stage()
    assert out.done()
    assert json.loads(out.manifest_path.read_text()) == manifest

    # PubMed: baseline files in upstream order, then the update file.
    assert [e["path"] for e in manifest["pubmed"]] == [
        "raw/pubmed/baseline/pubmed26n0001.xml.gz",
        "raw/pubmed/baseline/pubmed26n0002.xml.gz",
        "raw/pubmed/updatefiles/pubmed26n0005.xml.gz",
    ]
    assert [e["kind"] for e in manifest["pubmed"]] == ["baseline", "baseline", "update"]
    for e in manifest["pubmed"]:
        assert (home / e["path"]).stat().st_size == e["bytes"]
        assert set(e) == {"path", "kind", "md5", "bytes"}

    # PMC: the first 7 open-access articles in sorted order, from 3 batches.
    pmc = manifest["pmc"]
    folders = sorted(p.name for p in (mirror_dir / "pmc").iterdir())[:7]
    assert [e["path"] for e in pmc] == [f"raw/pmc/{f}/{f}.xml" for f in folders]
    assert all((home / e["metadata"]).is_file() for e in pmc)
    assert {"path", "metadata", "pmcid", "pmid", "license", "md5"} == set(pmc[0])

    assert manifest["pubmedqa"] == {
        "ori_pqal": "raw/pubmedqa/ori_pqal.json",
        "test_ground_truth": "raw/pubmedqa/test_ground_truth.json",
    }
    assert manifest["hoc"]["dev"] == "raw/hoc/dev.tsv"
    assert manifest["corpora"][0]["name"] == "biomed_text"
    assert manifest["corpora"][0]["source"].startswith(str(mirror_dir))
    assert manifest["counts"]["pmc_articles"] == 7
    assert manifest["counts"]["pubmed_baseline"] == 2

    # A raw file deleted by hand is fetched again on the next run (its unit is not trusted).
    victim = home / manifest["pubmed"][1]["path"]
    victim.unlink()
    out.manifest_path.unlink()
    assert run_stage() == manifest
    assert victim.is_file()
