"""Filter plan (revisions, deletions, empty, language, duplicates), the split, and apply_plan."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mediswift.config import load_recipe
from mediswift.data.filters import (
    REASONS,
    UNKNOWN_YEAR,
    ShardRef,
    apply_plan,
    plan_filter,
    split_of,
)
from mediswift.data.pmc import PmcHints, iter_pmc
from mediswift.data.shards import Document, write_documents
from mediswift.sections import FilterConfig
from mediswift.stages.filter import (
    ParsedShard,
    collect,
    merge_unit,
    run_merge,
    run_scan,
    run_shard,
    scan_units,
    shard_units,
)


def pm(pmid: int, text: str = "abstract", version: int = 1, lang: str = "eng") -> Document:
    return Document(doc_id=f"pmid:{pmid}", source="pubmed", pmid=str(pmid), pmid_version=version,
                    text=text, language=lang)  # fmt: skip


@pytest.fixture
def shards(tmp_path: Path) -> list[ShardRef]:
    layout = [
        ("pubmed", [pm(1, "old"), pm(2), pm(3, ""), pm(4, lang="fre"), pm(5)], ()),
        ("pubmed", [pm(6), pm(7), pm(9, "v2", version=2), pm(9, "v1")], ()),
        ("pubmed", [pm(1, "new"), pm(2, ""), pm(8)], ("5", "6")),  # an update file
        ("pubmed", [pm(6, "re-sent after its deletion")], ()),
        ("pmc", [Document("pmc:PMC1", "pmc", text="a"), Document("pmc:PMC1", "pmc", text="b")], ()),
        ("corpus", [Document("pmid:7", "corpus:c", text="t", pmid="7"),
                    Document("x1", "corpus:c", text="t")], ()),
    ]  # fmt: skip
    refs = []
    for i, (source, docs, deleted) in enumerate(layout):
        path = tmp_path / f"in-{i}.parquet"
        write_documents(path, docs)
        refs.append(ShardRef(path, source, deleted))
    return refs


def test_plan_reasons(shards: list[ShardRef]) -> None:
    codes, dropped = plan_filter(shards, min_text_chars=1, languages=["eng"])
    names = [[REASONS[c] for c in code] for code in codes]
    assert names == [
        ["superseded", "superseded", "empty_text", "language", "deleted"],
        ["superseded", "keep", "keep", "superseded"],
        ["keep", "empty_text", "keep"],
        ["keep"],
        ["keep", "duplicate"],
        ["duplicate", "keep"],
    ]
    assert dropped == {
        "superseded": 4,
        "deleted": 1,
        "empty_text": 2,
        "language": 1,
        "duplicate": 2,
    }


def test_no_language_filter_by_default(shards: list[ShardRef]) -> None:
    codes, dropped = plan_filter(shards)
    assert dropped["language"] == 0 and REASONS[codes[0][3]] == "keep"


def test_split_is_stable_and_about_three_percent() -> None:
    assert split_of("pmid:1", "mediswift", 0.03) == split_of("pmid:1", "mediswift", 0.03)
    ids = [f"pmid:{i}" for i in range(20_000)]
    val = [d for d in ids if split_of(d, "mediswift", 0.03) == "validation"]
    assert 0.025 < len(val) / len(ids) < 0.035
    other = {d for d in ids if split_of(d, "other-salt", 0.03) == "validation"}
    assert len(other & set(val)) < len(val) / 2  # the salt reshuffles the split
    assert all(split_of(d, "mediswift", 0.0) == "train" for d in ids[:100])


def test_apply_plan(shards: list[ShardRef], tmp_path: Path) -> None:
    codes, _ = plan_filter(shards, languages=["eng"])
    out = tmp_path / "out.parquet"
    result = apply_plan(shards[1].path, codes[1], out, "mediswift", 0.5)
    table = pq.read_table(out)
    assert table["doc_id"].to_pylist() == ["pmid:7", "pmid:9"]
    assert table["text"].to_pylist() == ["abstract", "v2"]
    assert table["split"].to_pylist() == [
        split_of(d, "mediswift", 0.5) for d in ["pmid:7", "pmid:9"]
    ]
    assert result["n_docs"] == 2 == result["n_train"] + result["n_validation"]
    assert result["by_source"]["pubmed"] == {
        "train": result["n_train"],
        "validation": result["n_validation"],
    }
    with pytest.raises(ValueError, match="filter plan has 3 rows"):
        apply_plan(shards[1].path, codes[2], tmp_path / "x.parquet", "s", 0.03)
    assert not (tmp_path / "x.parquet").exists()


def test_scans_survive_the_disk_and_merge_like_the_whole_plan(
    shards: list[ShardRef], tmp_path: Path
) -> None:
    from mediswift.data.filters import ShardScan, merge_scans, scan_shard

    scans = []
    for i, ref in enumerate(shards):
        (tmp_path / f"scan-{i}.npz").write_bytes(scan_shard(ref, languages=["eng"]).to_bytes())
        scans.append(ShardScan.load(tmp_path / f"scan-{i}.npz"))
    codes, dropped = merge_scans(shards, scans)
    whole, whole_dropped = plan_filter(shards, languages=["eng"])
    assert dropped == whole_dropped and dropped["duplicate"] > 0
    assert all(np.array_equal(a, b) for a, b in zip(codes, whole, strict=True))
    with open(tmp_path / "evil.npz", "wb") as f:
        np.savez(f, codes=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        ShardScan.load(tmp_path / "evil.npz")


def test_snapshot_keeps_the_copy_from_before_the_date(tmp_path: Path) -> None:
    """`max_revised`: PubMed as read on the date. A copy revised later is not in the snapshot:
    the earlier copy of the PMID wins instead, and a record whose only copy is later goes."""

    def doc(pmid: int, text: str, revised: str | None) -> Document:
        d = pm(pmid, text)
        d.revised = revised
        return d

    layout = [
        ("pubmed", [doc(1, "baseline", "2022-05-01"), doc(2, "late", "2023-03-01"),
                    doc(3, "no date", None)]),
        ("pubmed", [doc(1, "update after the date", "2023-06-01"),
                    doc(4, "update before", "2022-12-31")]),
    ]  # fmt: skip
    refs = []
    for i, (source, docs) in enumerate(layout):
        write_documents(tmp_path / f"{i}.parquet", docs)
        refs.append(ShardRef(tmp_path / f"{i}.parquet", source))
    codes, dropped = plan_filter(refs, max_revised="2023-01-01")
    assert [[REASONS[c] for c in code] for code in codes] == [
        ["keep", "revised_after", "keep"],
        ["revised_after", "keep"],
    ]
    assert dropped["revised_after"] == 2 and dropped["superseded"] == 0
    # Without the snapshot the update wins, as every day.
    codes, dropped = plan_filter(refs)
    assert REASONS[codes[0][0]] == "superseded" and "revised_after" not in dropped


def test_the_any_pmcid_rule_drops_every_abstract_of_a_pmc_article(tmp_path: Path) -> None:
    with_pmc = pm(1, "in our PMC set")
    with_pmc.pmcid = "PMC11"
    elsewhere = pm(2, "its full text is not in our PMC set")
    elsewhere.pmcid = "PMC22"
    write_documents(tmp_path / "pm.parquet", [with_pmc, elsewhere, pm(3)])
    write_documents(tmp_path / "pmc.parquet", [Document("pmc:PMC11", "pmc", text="t", pmid="1")])
    refs = [ShardRef(tmp_path / "pm.parquet", "pubmed"), ShardRef(tmp_path / "pmc.parquet", "pmc")]
    kept_full_text, _ = plan_filter(refs, pmc_overlap=True)
    assert [REASONS[c] for c in kept_full_text[0]] == ["pmc_overlap", "keep", "keep"]
    any_pmcid, dropped = plan_filter(refs, pmc_overlap=True, pmc_overlap_rule="any_pmcid")
    assert [REASONS[c] for c in any_pmcid[0]] == ["pmc_overlap", "pmc_overlap", "keep"]
    assert dropped["pmc_overlap"] == 2


def _four_years_later(xml: str) -> str:
    """The article's XML with the year of every pub-date four years later."""

    def later(date: re.Match[str]) -> str:
        return re.sub(r"<year>(\d{4})</year>", lambda y: f"<year>{int(y[1]) + 4}</year>", date[0])

    return re.sub(r"<pub-date\b.*?</pub-date>", later, xml, flags=re.S)


def _mirror_pmc(mirror: Path, out: Path, redate: Collection[str] = ()) -> ShardRef:
    """Every PMC article of the mirror parsed into one shard, those in `redate` with their
    pub-dates four years later (only their XML's dates edited)."""
    docs = []
    for xml in sorted((mirror / "pmc").glob("*/*.xml")):
        pmcid = xml.parent.name.split(".")[0]
        if pmcid in redate:
            text = _four_years_later(xml.read_text(encoding="utf-8"))
            xml = out.parent / xml.name
            xml.write_text(text, encoding="utf-8")
        docs += iter_pmc(xml, PmcHints(pmcid))
    write_documents(out, docs)
    return ShardRef(out, "pmc")


def _with(ref: ShardRef, codes: list[np.ndarray], reason: str) -> set[str]:
    """The PMCIDs of the rows coded `reason`."""
    ids = pq.read_table(ref.path, columns=["pmcid"])["pmcid"].to_pylist()
    return {i for i, c in zip(ids, codes[0], strict=True) if REASONS[c] == reason}


def test_the_paper_snapshot_drops_pmc_articles_published_after_it(
    mirror_dir: Path, tmp_path: Path
) -> None:
    """The paper recipes' snapshot date reaches PMC: an article published on or after it was
    not in PMC that day (`published_after`). The mirror's articles are real; its latest are
    PMC7417471 (2020-08-10) and PMC7851846 (2021), all before the paper's date, so these two
    are also read re-dated four years on, as a post-cut-off article reads."""
    cutoff = load_recipe("paper").filter.max_revised
    assert cutoff == "2023-01-01"
    late = {"PMC7417471", "PMC7851846"}
    real = _mirror_pmc(mirror_dir, tmp_path / "real.parquet")
    _, dropped = plan_filter([real], max_revised=cutoff)
    assert dropped["published_after"] == 0  # the real dates are all before 2023
    # An earlier date drops exactly the real articles published on or after it; PMC7521676,
    # dated by its year only (2020), counts as of 2020-01-01 and stays.
    codes, dropped = plan_filter([real], max_revised="2020-06-01")
    assert _with(real, codes, "published_after") == late and dropped["published_after"] == 2
    assert "PMC7521676" in _with(real, codes, "keep")
    redated = _mirror_pmc(mirror_dir, tmp_path / "redated.parquet", late)
    codes, dropped = plan_filter([redated], max_revised=cutoff)
    assert _with(redated, codes, "published_after") == late and dropped["published_after"] == 2
    assert dropped["revised_after"] == 0  # the PubMed rule has nothing to say about PMC
    codes, dropped = plan_filter([redated])  # without the snapshot they are kept
    assert late <= _with(redated, codes, "keep") and "published_after" not in dropped


def test_the_snapshot_counts_its_pubmed_drops_by_publication_year(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """How many records `max_revised` drops, by publication year, in the stage's counts and
    its log: an article of 1998 revised in 2023 is dropped as surely as one of 2023."""

    def doc(pmid: int, year: int | None, revised: str) -> Document:
        d = pm(pmid)
        d.year, d.revised = year, revised
        return d

    write_documents(
        tmp_path / "a.parquet",
        [
            doc(1, 1998, "2023-02-01"),
            doc(2, 2021, "2022-01-01"),
            doc(3, 2022, "2023-05-05"),
            doc(4, None, "2024-01-01"),
        ],
    )
    write_documents(
        tmp_path / "b.parquet", [doc(5, 1998, "2023-03-01"), doc(6, 2022, "2022-12-31")]
    )
    cfg = FilterConfig(max_revised="2023-01-01")
    parsed = [ParsedShard(path=p, source="pubmed") for p in ("a.parquet", "b.parquet")]
    scans = [run_scan(s, tmp_path) for s in scan_units(cfg, parsed)]
    merged = run_merge(merge_unit(cfg, parsed, scans), tmp_path)
    expected = {"1998": 2, "2022": 1, UNKNOWN_YEAR: 1}
    assert merged.revised_after_by_year == expected
    assert list(merged.revised_after_by_year) == ["1998", "2022", UNKNOWN_YEAR]
    results = [run_shard(s, tmp_path) for s in shard_units(cfg, parsed, merged, None)]
    with caplog.at_level(logging.INFO):
        manifest = collect(cfg, tmp_path, parsed, merged, results, None)
    assert manifest.counts["revised_after_by_year"] == expected
    assert manifest.counts["dropped"]["revised_after"] == sum(expected.values())
    assert "revised_after by publication year: 1998: 2, 2022: 1, unknown: 1" in caplog.text
    # Without the snapshot there is nothing to count, and no count is shown.
    plain = FilterConfig()
    scans = [run_scan(s, tmp_path) for s in scan_units(plain, parsed)]
    assert run_merge(merge_unit(plain, parsed, scans), tmp_path).revised_after_by_year is None
