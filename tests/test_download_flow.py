"""The download stage inside a Prefect flow (test harness), reading the mirror as a folder.

Marked slow: starting the harness's Prefect server takes ~30 s on a loaded 2-core machine; the
tests themselves take a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow

from flows.registry import plan
from flows.stages import download as stage
from mediswift.config import PipelineConfig


def _cfg(mirror_dir: Path) -> PipelineConfig:
    download = {
        "pubmed_max_files": 2,
        "pubmed_include_updates": True,
        "pmc_max_articles": 7,
        "pmc_batch_size": 3,
        "max_connections": 1,  # a window of 4 tasks in flight, fewer than the 9 jobs
        "extra_corpora": ["corpus/biomed_text.jsonl"],
    }
    return PipelineConfig.model_validate({"mirror": str(mirror_dir), "download": download})


@pytest.mark.slow
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

    # Downstream tasks' files are the finetune stage's: a new task never re-keys the corpus.
    assert "pubmedqa" not in manifest and "hoc" not in manifest
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


@pytest.mark.slow
def test_permanent_error_fails_the_stage_without_retries(
    prefect_harness, mirror_dir: Path, tmp_path: Path
):
    from prefect.client.orchestration import get_client

    from mediswift.data.download import NotFoundError

    cfg = _cfg(mirror_dir)
    cfg.download.extra_corpora = ["missing-corpus.jsonl"]
    cfg.download.pmc_max_articles = 0
    cfg.download.pubmed_max_files = 0
    cfg.download.pubmed_include_updates = False
    home = tmp_path / "home"
    out = plan(cfg, home)["download"]

    @flow(name="download-stage-404")
    def run_stage() -> dict:
        return stage.run(cfg, home, out, {})

    with pytest.raises(NotFoundError, match="missing-corpus.jsonl"):
        run_stage()
    assert not out.done()
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_task_runs() if r.name == "corpus-missing-corpus.jsonl"]
    assert len(runs) == 1 and runs[0].run_count == 1  # a retry would have made it 2
