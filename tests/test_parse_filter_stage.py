"""Parse + filter stages inside the `mediswift` flow (Prefect test harness) on the mirror.

The download output is built by hand (the mirror's files copied under `<home>/raw`, a download
manifest in the contract's format), so these tests exercise parse and filter alone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.data.pubmed import iter_pubmed

N_PMC = 12
# The Prefect test server takes most of the time (tens of seconds on a busy machine).
pytestmark = pytest.mark.slow


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_home(
    root: Path,
    mirror: Path,
    on_error: str = "fail",
    truncate: str | None = None,
    max_quarantined: int = 0,
):
    """A home whose download stage is done: mirror files under raw/, manifest written."""
    home = root / "home"
    root.mkdir(parents=True, exist_ok=True)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: stage-test\n"
        f"download: {{pmc_max_articles: {N_PMC}, extra_corpora: [corpus/biomed_text.jsonl]}}\n"
        f"parse: {{on_error: {on_error}, pmc_articles_per_shard: 5, "
        f"max_quarantined: {max_quarantined}}}\n"
    )
    pubmed = []
    for kind, folder in (("baseline", "baseline"), ("update", "updatefiles")):
        for src in sorted((mirror / "pubmed" / folder).glob("*.xml.gz")):
            rel = f"raw/pubmed/{folder}/{src.name}"
            dst = home / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            dst.write_bytes(data[: len(data) // 2] if src.name == truncate else data)
            pubmed.append(
                {"path": rel, "kind": kind, "md5": _md5(dst), "bytes": dst.stat().st_size}
            )
    pmc = []
    for folder in sorted((mirror / "pmc").iterdir())[:N_PMC]:
        shutil.copytree(folder, home / "raw/pmc" / folder.name)
        meta = json.loads((folder / f"{folder.name}.json").read_text())
        rel = f"raw/pmc/{folder.name}/{folder.name}.xml"
        pmc.append({
            "path": rel, "metadata": rel[:-4] + ".json", "pmcid": meta["pmcid"],
            "pmid": meta.get("pmid"), "license": meta["license_code"], "md5": _md5(home / rel),
        })  # fmt: skip
    corpus = home / "raw/corpus/biomed_text.jsonl"
    corpus.parent.mkdir(parents=True)
    shutil.copy(mirror / "corpus/biomed_text.jsonl", corpus)
    cfg = load_recipe(str(recipe), mirror=str(mirror))
    plan(cfg, home)["download"].ensure().write_manifest({
        "pubmed": pubmed, "pmc": pmc,
        "corpora": [{"path": "raw/corpus/biomed_text.jsonl", "name": "biomed_text",
                     "source": "corpus/biomed_text.jsonl"}],
        "counts": {}, "skipped": {},
    })  # fmt: skip
    return home, recipe


def run(home: Path, recipe: Path, mirror: Path, stages: list[str]) -> dict[str, Any]:
    out = mediswift(recipe=str(recipe), stages=stages, home=str(home), mirror=str(mirror))
    return {s: json.loads((Path(out[s]) / "manifest.json").read_text()) for s in stages}


@pytest.fixture(scope="session")
def stage_run(prefect_harness, mirror_dir: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    home, recipe = make_home(tmp_path_factory.mktemp("stages"), mirror_dir)
    return home, recipe, run(home, recipe, mirror_dir, ["parse", "filter"])


def test_parse_manifest(stage_run) -> None:
    home, _, m = stage_run
    parse = m["parse"]
    c = parse["counts"]
    assert c["pubmed"] == {
        "PubmedArticle": 1293, "PubmedBookArticle": 10, "MedlineCitation": 0,
        "no_abstract": 123, "deleted": 2,
    }  # fmt: skip
    assert c["pmc"]["articles"] == N_PMC and c["corpus"]["documents"] == 8163
    assert c["documents"] == 1303 + N_PMC + 8163
    assert len(parse["deleted_pmids"]) == 2 and parse["quarantined"] == []
    sources = Counter(s["source"] for s in parse["shards"])
    assert sources == {"pubmed": 5, "pmc": 3, "corpus": 1}  # one shard per file / per 5 articles
    for s in parse["shards"]:
        assert pq.ParquetFile(home / s["path"]).metadata.num_rows == s["n_docs"]


def test_filter_shards_match_manifest(stage_run, mirror_dir: Path) -> None:
    home, _, m = stage_run
    counts = m["filter"]["counts"]
    assert counts["input"] == m["parse"]["counts"]["documents"]
    assert counts["dropped"] == {
        "superseded": 3, "deleted": 2, "empty_text": 123, "language": 0, "duplicate": 0,
    }  # fmt: skip
    splits: Counter[str] = Counter()
    ids: list[str] = []
    by_source: dict[str, Counter[str]] = {}
    for s in m["filter"]["shards"]:
        t = pq.read_table(home / s["path"])
        got = Counter(t["split"].to_pylist())
        assert (t.num_rows, got["train"], got["validation"]) == (
            s["n_docs"], s["n_train"], s["n_validation"],
        )  # fmt: skip
        splits += got
        ids += t["doc_id"].to_pylist()
        for src, sp in zip(t["source"].to_pylist(), t["split"].to_pylist(), strict=True):
            by_source.setdefault(src, Counter())[sp] += 1
        assert all(t["text"].to_pylist())  # no title-only record survives
    assert dict(splits) == counts["kept"]
    assert {k: dict(v) for k, v in by_source.items()} == counts["by_source"]
    assert len(ids) == len(set(ids)) == 1303 - 128 + N_PMC + 8163
    assert 0.02 < splits["validation"] / len(ids) < 0.04
    for pmid in m["parse"]["deleted_pmids"]:
        assert f"pmid:{pmid}" not in ids
    # The update file's version of a re-sent record is the one kept.
    update = mirror_dir / "pubmed/updatefiles/pubmed26n0005.xml.gz"
    resent = {d.doc_id: d.text for d in iter_pubmed(update)}
    kept = {}
    for s in m["filter"]["shards"]:
        t = pq.read_table(home / s["path"], columns=["doc_id", "text"]).to_pylist()
        kept.update({r["doc_id"]: r["text"] for r in t if r["doc_id"] in resent})
    assert kept == {k: v for k, v in resent.items() if v}


def test_second_run_does_no_work(stage_run, mirror_dir: Path) -> None:
    home, recipe, m = stage_run
    units = sorted((home / "parse/units").iterdir()) + sorted((home / "filter/units").iterdir())
    before = {p: (p / "manifest.json").stat().st_mtime_ns for p in units}
    again = run(home, recipe, mirror_dir, ["parse", "filter"])
    assert again == m
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in units} == before


def test_bad_file_fails_or_is_quarantined(
    prefect_harness, mirror_dir: Path, tmp_path: Path
) -> None:
    bad = "pubmed26n0002.xml.gz"
    home, recipe = make_home(tmp_path / "fail", mirror_dir, truncate=bad)
    with pytest.raises(Exception, match=rf"{bad}: truncated or corrupt gzip"):
        run(home, recipe, mirror_dir, ["parse"])
    assert not list(home.glob("parse/*/manifest.json"))
    assert not any(bad in str(p) for p in home.glob("parse/units/*/*.parquet"))

    home, recipe = make_home(
        tmp_path / "q", mirror_dir, on_error="quarantine", truncate=bad, max_quarantined=1
    )
    parse = run(home, recipe, mirror_dir, ["parse"])["parse"]
    assert [q["input"] for q in parse["quarantined"]] == [f"raw/pubmed/baseline/{bad}"]
    assert "compressed bytes" in parse["quarantined"][0]["error"]
    assert all(s["input"] != f"raw/pubmed/baseline/{bad}" for s in parse["shards"])
    assert len([s for s in parse["shards"] if s["source"] == "pubmed"]) == 4
    # The quarantined file's unit is not marked done: a later run tries it again.
    assert len(list(home.glob("parse/units/*/manifest.json"))) == 4 + 3 + 1
    with gzip.open(mirror_dir / "pubmed/baseline" / bad) as f:
        assert f.read(5) == b"<?xml"  # the mirror itself is untouched


def test_quarantine_heals_when_the_file_is_fixed_upstream(
    prefect_harness, mirror_dir: Path, tmp_path: Path
) -> None:
    bad = "pubmed26n0002.xml.gz"
    home, recipe = make_home(tmp_path, mirror_dir, on_error="quarantine", truncate=bad)
    # Above parse.max_quarantined (0): the stage fails, naming the file, and is not done.
    with pytest.raises(RuntimeError, match=rf"1 input file\(s\) quarantined .*{bad}"):
        run(home, recipe, mirror_dir, ["parse"])
    assert not list(home.glob("parse/*/manifest.json"))
    assert (home / "quarantine/raw/pubmed/baseline" / bad).is_file()  # kept for inspection
    good_units = sorted(home.glob("parse/units/*/manifest.json"))
    stamps = [p.stat().st_mtime_ns for p in good_units]
    # The mirror holds the good file ("fixed upstream"): the next run fetches and parses it.
    out = run(home, recipe, mirror_dir, ["download", "parse"])
    assert out["parse"]["quarantined"] == []
    assert len([s for s in out["parse"]["shards"] if s["source"] == "pubmed"]) == 5
    assert _md5(home / f"raw/pubmed/baseline/{bad}") == _md5(mirror_dir / f"pubmed/baseline/{bad}")
    # Only the healed file was parsed again.
    assert [p.stat().st_mtime_ns for p in good_units] == stamps
