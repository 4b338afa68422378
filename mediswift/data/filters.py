"""Filtering and the train/validation split, as the paper's Section 3.1 and Table 1 describe.

Two passes over the document shards, memory bounded by the number of PubMed records (a few
numpy arrays), never by the text:

1. The plan gives each row a reason code (0 = keep), the first that applies of the rules below.
   It is split as the rules are: `scan_shard` reads one shard's small columns (the reasons a
   row shows on its own, and its doc_id digest, PMID and version), one task per shard;
   `merge_scans` applies the rules across shards to the scans (`plan_filter` does both):
   - `superseded`: an older copy of a PMID; the latest wins, ordered by (shard position, i.e.
     file order: baseline before updates, then PMID Version, then row within the file);
   - `deleted`: the winning copy of a PMID that a `DeleteCitation` in the same or a later file
     removes (a copy re-sent in a file after the deletion stands);
   - `empty_text`: title-only records (no abstract / empty text), as the paper drops them;
   - `language`: the record's language is known and not in `FilterConfig.languages` (records
     of unknown language, such as corpus texts, are kept);
   - `after_cutoff` (only with `max_year`): published after the cut-off year; records without
     a year are kept;
   - `revised_after` (only with `max_revised`): a PubMed copy last revised (`DateRevised`) on
     or after the snapshot date, as if PubMed were read on that date (the paper: "updated prior
     to 2023"). Such a copy takes no part in revisions: an older copy of the PMID from before
     the date wins instead (one in the baseline, when an update file re-sent it later). A
     record whose only copy was revised later is dropped: a current baseline keeps no older
     version of it. Records without the date (PMC, corpora, books) are kept;
     `revised_after_by_year` counts these drops by publication year, so a user sees whether
     the snapshot removes old articles that were merely revised later;
   - `published_after` (only with `max_revised`): a PMC article published (its earliest
     `pub-date`) on or after the snapshot date, which PMC did not hold that day; articles
     without a date are kept;
   - `duplicate`: a doc_id already kept earlier in shard order (PubMed, then PMC, then corpora;
     doc_ids are compared as 64-bit BLAKE2b digests, so memory stays ~12 bytes a document);
   - `pmc_overlap` (only with `pmc_overlap`): a PubMed abstract whose article's full text is
     among the kept PMC documents (same PMID), which would otherwise be trained on twice; with
     `pmc_overlap_rule: any_pmcid`, every PubMed abstract whose record names a PMC article
     (The Pile's script: its PubMed set leaves out every abstract of a PMC article), kept in
     our PMC set or not.
2. `apply_plan` writes one filtered shard per input shard: the kept rows, in order, with
   `split` = `validation` for a stable ~3% of doc_ids (`split_of`). With an `NgramIndex` it
   first decontaminates the kept rows (`mediswift.data.decontaminate`): a row sharing an
   n-gram with an evaluation example, boilerplate n-grams aside, is dropped as
   `contamination` (`document` mode) or loses the n-gram's window (`window` mode; the title
   then leads the text). That check reads the text, which this pass reads anyway, and runs
   shard by shard in parallel. `count_ngrams` is the pass before it that counts, for the
   boilerplate guard, how many kept rows hold each evaluation n-gram.

`dropped` lists the optional reasons only when their rule is on, so a count of 0 always means
"checked, none found".
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mediswift.data.contamination import NgramIndex
from mediswift.data.decontaminate import document_counts, screen
from mediswift.data.shards import FILTERED_SCHEMA, ShardWriter, iter_batches, num_rows

REASONS: tuple[str, ...] = (
    "keep", "superseded", "deleted", "empty_text", "language", "duplicate",
    "after_cutoff", "pmc_overlap", "contamination", "revised_after", "published_after",
)  # fmt: skip
(
    KEEP, SUPERSEDED, DELETED, EMPTY, LANGUAGE, DUPLICATE, AFTER_CUTOFF, PMC_OVERLAP, CONTAMINATION,
    REVISED_AFTER, PUBLISHED_AFTER,
) = range(len(REASONS))  # fmt: skip
# The reasons the snapshot date (`max_revised`) adds: PubMed by DateRevised, PMC by publication.
SNAPSHOT = ("revised_after", "published_after")
UNKNOWN_YEAR = "unknown"
PMC_OVERLAP_RULES = ("full_text_kept", "any_pmcid")
ALWAYS = ("superseded", "deleted", "empty_text", "language", "duplicate")
NO_PMID = -1


@dataclass(frozen=True)
class ShardRef:
    """A parsed shard, as the parse manifest lists it (in order)."""

    path: Path
    source: str  # pubmed | pmc | corpus
    deleted_pmids: Sequence[str] = field(default_factory=tuple)


def split_of(doc_id: str, salt: str, validation_fraction: float) -> str:
    """'validation' or 'train', from SHA-256 of salt and doc_id: stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}\x00{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "validation" if u < validation_fraction else "train"


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")


def _pmids(column: pa.Array) -> np.ndarray:
    """PMIDs as int64, NO_PMID where missing or not a number (PMC metadata can be odd)."""
    ok = pc.fill_null(pc.match_substring_regex(column, r"^[0-9]{1,18}$"), False)
    safe = pc.if_else(ok, column, pa.scalar(str(NO_PMID)))
    return pc.cast(pc.fill_null(safe, str(NO_PMID)), pa.int64()).to_numpy(zero_copy_only=False)


def _row_codes(
    batch: pa.RecordBatch,
    min_text_chars: int,
    wanted: set[str] | None,
    max_year: int | None,
    max_revised: str | None = None,
) -> np.ndarray:
    """The reasons one row shows on its own: empty_text, language, after_cutoff, revised_after,
    published_after."""
    n = batch.num_rows
    code = np.zeros(n, dtype=np.uint8)
    lengths = pc.fill_null(pc.utf8_length(batch.column("text")), 0).to_numpy(zero_copy_only=False)
    code[lengths < min_text_chars] = EMPTY
    if wanted is not None:
        lang = batch.column("language").to_pylist()
        bad = np.fromiter((x is not None and x not in wanted for x in lang), dtype=bool, count=n)
        code[(code == KEEP) & bad] = LANGUAGE
    if max_year is not None:
        year = pc.fill_null(batch.column("year"), max_year).to_numpy(zero_copy_only=False)
        code[(code == KEEP) & (year > max_year)] = AFTER_CUTOFF
    if max_revised is not None:
        code[(code == KEEP) & _on_or_after(batch, "revised", max_revised)] = REVISED_AFTER
        code[(code == KEEP) & _on_or_after(batch, "published", max_revised)] = PUBLISHED_AFTER
    return code


def _on_or_after(batch: pa.RecordBatch, column: str, date: str) -> np.ndarray:
    """Rows whose date column is on or after `date` (ISO dates compare as strings; a row
    without the date is not)."""
    values = pc.fill_null(batch.column(column), "")
    return pc.greater_equal(values, pa.scalar(date)).to_numpy(zero_copy_only=False)


def _late_years(batch: pa.RecordBatch, code: np.ndarray) -> Counter[str]:
    """Publication year -> rows of the batch dropped as revised_after (UNKNOWN_YEAR: none)."""
    late = code == REVISED_AFTER
    if not late.any():
        return Counter()
    years = pc.fill_null(batch.column("year"), 0).to_numpy(zero_copy_only=False)[late]
    found, counts = np.unique(years, return_counts=True)
    return Counter(
        {str(y) if y else UNKNOWN_YEAR: int(n) for y, n in zip(found, counts, strict=True)}
    )


@dataclass
class ShardScan:
    """What the plan needs of one shard, read in one pass over its small columns: the reasons
    its rows show on their own, and the keys the cross-shard rules compare."""

    codes: np.ndarray  # uint8 reason per row (empty_text, language, cut-offs, else keep)
    digests: np.ndarray  # uint64 digest of every row's doc_id (for `duplicate`)
    pmids: np.ndarray | None = None  # int64 per row (PubMed and PMC shards)
    versions: np.ndarray | None = None  # int32 PMID Version per row (PubMed shards)
    has_pmcid: np.ndarray | None = None  # bool per row: the record names a PMC article (PubMed)
    # The revised_after rows by publication year (sorted years, counts): the code is final at
    # scan time (no rule across shards changes it), so a shard's count is its share.
    late_years: np.ndarray | None = None  # str years (UNKNOWN_YEAR: none)
    late_counts: np.ndarray | None = None  # int64

    def to_bytes(self) -> bytes:
        """As an `.npz` of plain arrays (read back with pickles refused)."""
        arrays = {"codes": self.codes, "digests": self.digests}
        optional = (
            ("pmids", self.pmids),
            ("versions", self.versions),
            ("has_pmcid", self.has_pmcid),
            ("late_years", self.late_years),
            ("late_counts", self.late_counts),
        )
        arrays |= {k: v for k, v in optional if v is not None}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> ShardScan:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in z.files})


def scan_shard(
    ref: ShardRef,
    min_text_chars: int = 1,
    languages: Sequence[str] | None = None,
    max_year: int | None = None,
    max_revised: str | None = None,
) -> ShardScan:
    """One shard's part of the plan (the costly part: it reads every row), independent of
    every other shard, so shards are scanned in parallel (or on a cluster) and merged after."""
    wanted = set(languages) if languages else None
    parts, digests, ids, vers, pmc = [], [], [], [], []
    late: Counter[str] = Counter()
    columns = ["doc_id", "pmid", "pmid_version", "pmcid", "text", "language", "year", "revised",
               "published"]  # fmt: skip
    for batch in iter_batches(ref.path, columns):
        parts.append(_row_codes(batch, min_text_chars, wanted, max_year, max_revised))
        late += _late_years(batch, parts[-1])
        doc_ids = batch.column("doc_id").to_pylist()
        digests.append(np.fromiter(map(_id_hash, doc_ids), np.uint64, len(doc_ids)))
        if ref.source == "pmc":
            ids.append(_pmids(batch.column("pmid")))
        if ref.source == "pubmed":  # a PubMed row always has a numeric PMID
            pmid = pc.cast(batch.column("pmid"), pa.int64()).to_numpy(zero_copy_only=False)
            ids.append(pmid.astype(np.int64))
            ver = pc.fill_null(batch.column("pmid_version"), 1).to_numpy(zero_copy_only=False)
            vers.append(ver.astype(np.int32))
            named = pc.is_valid(batch.column("pmcid")).to_numpy(zero_copy_only=False)
            pmc.append(named.astype(bool))
    has_pmids = ref.source in ("pubmed", "pmc")
    return ShardScan(
        codes=np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8),
        digests=np.concatenate(digests) if digests else np.zeros(0, dtype=np.uint64),
        pmids=(np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)) if has_pmids else None,
        versions=(np.concatenate(vers) if vers else np.zeros(0, dtype=np.int32))
        if ref.source == "pubmed"
        else None,
        has_pmcid=(np.concatenate(pmc) if pmc else np.zeros(0, dtype=bool))
        if ref.source == "pubmed"
        else None,
        late_years=np.array(sorted(late), dtype=np.str_) if late else None,
        late_counts=np.array([late[y] for y in sorted(late)], dtype=np.int64) if late else None,
    )


def revised_after_by_year(scans: Sequence[ShardScan]) -> dict[str, int]:
    """Publication year -> PubMed records the snapshot dropped (revised_after), over every
    shard, oldest year first (UNKNOWN_YEAR last)."""
    total: Counter[str] = Counter()
    for scan in scans:
        if scan.late_years is not None and scan.late_counts is not None:
            total.update(
                dict(zip(scan.late_years.tolist(), scan.late_counts.tolist(), strict=True))
            )
    return {y: total[y] for y in sorted(total, key=lambda y: (y == UNKNOWN_YEAR, y))}


def merge_scans(
    shards: Sequence[ShardRef],
    scans: Sequence[ShardScan],
    max_year: int | None = None,
    pmc_overlap: bool = False,
    max_revised: str | None = None,
    pmc_overlap_rule: str = "full_text_kept",
) -> tuple[list[np.ndarray], dict[str, int]]:
    """The rules across shards (revisions, deletions, duplicates, PMC overlap) over the scans,
    in shard order: a reason code for every row of every shard, and the dropped counts.

    Memory: the scans' arrays, about 21 bytes a PubMed row and 9 bytes any other row."""
    codes = [s.codes.copy() for s in scans]
    deleted_at: dict[int, int] = {}  # pmid -> last shard index that deletes it
    for i, ref in enumerate(shards):
        for pmid in ref.deleted_pmids:
            deleted_at[int(pmid)] = i
    pmids = [s.pmids for s in scans]
    _mark_revisions(shards, codes, pmids, [s.versions for s in scans], deleted_at)
    _mark_duplicates(codes, [s.digests for s in scans])
    if pmc_overlap and pmc_overlap_rule == "any_pmcid":
        for code, scan in zip(codes, scans, strict=True):
            if scan.has_pmcid is not None:
                code[(code == KEEP) & scan.has_pmcid] = PMC_OVERLAP
    elif pmc_overlap:
        _mark_pmc_overlap(shards, codes, pmids)
    dropped: Counter[str] = Counter()
    for code in codes:
        counts = np.bincount(code, minlength=len(REASONS))
        for k in range(1, len(REASONS)):
            dropped[REASONS[k]] += int(counts[k])
    reasons = ALWAYS + (("after_cutoff",) if max_year is not None else ())
    reasons += SNAPSHOT if max_revised is not None else ()
    reasons += ("pmc_overlap",) if pmc_overlap else ()
    return codes, {r: dropped[r] for r in reasons}


def plan_filter(
    shards: Sequence[ShardRef],
    min_text_chars: int = 1,
    languages: Sequence[str] | None = None,
    max_year: int | None = None,
    pmc_overlap: bool = False,
    max_revised: str | None = None,
    pmc_overlap_rule: str = "full_text_kept",
) -> tuple[list[np.ndarray], dict[str, int]]:
    """A reason code (uint8, see REASONS) for every row of every shard, and the dropped counts:
    every shard scanned here, one after another, then merged."""
    scans = [scan_shard(ref, min_text_chars, languages, max_year, max_revised) for ref in shards]
    return merge_scans(shards, scans, max_year, pmc_overlap, max_revised, pmc_overlap_rule)


def _mark_revisions(
    shards: Sequence[ShardRef],
    codes: list[np.ndarray],
    pmids: Sequence[np.ndarray | None],
    versions: Sequence[np.ndarray | None],
    deleted_at: dict[int, int],
) -> None:
    """Mark older copies of a PMID `superseded` and deleted winners `deleted` (PubMed only).
    Copies revised after the snapshot date (`revised_after`) are not in the snapshot: they
    take no part, so the newest copy from before the date wins."""
    which = [i for i, ref in enumerate(shards) if ref.source == "pubmed"]
    if not which:
        return
    lengths = [len(codes[i]) for i in which]
    pmid = np.concatenate([pmids[i] for i in which])  # type: ignore[misc]
    ver = np.concatenate([versions[i] for i in which])  # type: ignore[misc]
    shard = np.repeat(np.asarray(which, dtype=np.int32), lengths)
    row = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    present = np.concatenate([codes[i] for i in which]) != REVISED_AFTER
    pmid, ver, shard, row = pmid[present], ver[present], shard[present], row[present]
    # Sort by pmid, then (shard, version, row): the last row of each pmid group wins.
    order = np.lexsort((row, ver, shard, pmid))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pmid[order][1:] != pmid[order][:-1]
    for idx in order[~last]:
        codes[shard[idx]][row[idx]] = SUPERSEDED
    winners = order[last]
    if deleted_at:
        keys = np.fromiter(deleted_at, dtype=np.int64, count=len(deleted_at))
        for idx in winners[np.isin(pmid[winners], keys)]:
            if deleted_at[int(pmid[idx])] >= shard[idx]:
                codes[shard[idx]][row[idx]] = DELETED


def _mark_pmc_overlap(
    shards: Sequence[ShardRef], codes: list[np.ndarray], pmids: list[np.ndarray | None]
) -> None:
    """Mark kept PubMed rows whose PMID a kept PMC document carries (The Pile's PubMed rule:
    the full text already holds the abstract)."""
    in_pmc = [
        p[code == KEEP]
        for ref, code, p in zip(shards, codes, pmids, strict=True)
        if ref.source == "pmc" and p is not None
    ]
    full = np.unique(np.concatenate(in_pmc)) if in_pmc else np.zeros(0, dtype=np.int64)
    full = full[full != NO_PMID]
    for ref, code, p in zip(shards, codes, pmids, strict=True):
        if ref.source == "pubmed" and p is not None and len(full):
            code[(code == KEEP) & np.isin(p, full)] = PMC_OVERLAP


def _mark_duplicates(codes: list[np.ndarray], digests: Sequence[np.ndarray]) -> None:
    """Mark rows whose doc_id was kept earlier (in shard order) as duplicates.

    Memory: 8 bytes of digest + 4 bytes of row index per kept row (numpy), no Python set."""
    kept_rows = [np.flatnonzero(c == KEEP).astype(np.int32) for c in codes]
    if not kept_rows:
        return
    digest = np.concatenate([d[r] for d, r in zip(digests, kept_rows, strict=True)])
    _, first = np.unique(digest, return_index=True)  # index of each digest's first occurrence
    dup = np.ones(len(digest), dtype=bool)
    dup[first] = False
    # Map positions back to (shard, row): kept rows were appended shard by shard, in order.
    per_shard = np.cumsum([0] + [len(r) for r in kept_rows])
    row = np.concatenate(kept_rows)
    for pos in np.flatnonzero(dup):
        i = int(np.searchsorted(per_shard, pos, side="right")) - 1
        codes[i][row[pos]] = DUPLICATE


def _scan_text(table: pa.Table) -> pa.Array:
    """What a document contributes to pre-training: its title, then its text."""
    title = pc.fill_null(table["title"], "")
    text = pc.fill_null(table["text"], "")
    return pc.binary_join_element_wise(title, text, " ").combine_chunks()


def _kept_tables(shard: Path, codes: np.ndarray) -> Iterator[pa.Table]:
    """The shard's batches as tables of their kept rows (codes == KEEP), in order."""
    rows = num_rows(shard)
    if rows != len(codes):
        raise ValueError(f"{shard}: {rows} rows but the filter plan has {len(codes)} rows")
    start = 0
    for batch in iter_batches(shard):
        n = batch.num_rows
        keep = codes[start : start + n] == KEEP
        start += n
        yield pa.Table.from_batches([batch]).filter(pa.array(keep))


def count_ngrams(shard: Path, codes: np.ndarray, index: NgramIndex) -> Counter[int]:
    """Evaluation n-gram hash -> how many kept rows of the shard hold it (the guard's count)."""
    out: Counter[int] = Counter()
    for table in _kept_tables(shard, codes):
        if table.num_rows:
            out.update(document_counts(index.find(_scan_text(table))))
    return out


def _with_cuts(table: pa.Table, cut: dict[int, str]) -> pa.Table:
    """The table with the cut rows' text replaced and their title emptied (it led the text)."""
    if not cut:
        return table
    titles, texts = table["title"].to_pylist(), table["text"].to_pylist()
    for row, text in cut.items():
        titles[row], texts[row] = "", text
    for name, values in (("title", titles), ("text", texts)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, table[name].type))
    return table


def apply_plan(
    shard: Path,
    codes: np.ndarray,
    out: Path,
    salt: str,
    validation_fraction: float,
    index: NgramIndex | None = None,
    mode: str = "document",
    ignore: set[int] | None = None,
) -> dict[str, Any]:
    """Write the kept rows of `shard` (codes == 0) to `out` with a `split` column; with an
    `index`, rows sharing an n-gram (outside `ignore`, the boilerplate) with an evaluation
    example are dropped as `contamination` or cut (`mode`), and listed in `matches` as
    [doc_id, [example index, ...]]."""
    by_source: dict[str, Counter[str]] = {}
    matches: list[list[Any]] = []
    tally: Counter[str] = Counter()
    with ShardWriter(out, FILTERED_SCHEMA) as w:
        for table in _kept_tables(shard, codes):
            if index is not None and table.num_rows:
                s = screen(_scan_text(table), index, mode, ignore)
                ids = table["doc_id"].to_pylist()
                matches += [[ids[row], list(examples)] for row, examples in s.found]
                tally.update(dropped=s.dropped, cut=len(s.cut), spared=s.spared,
                             chars=s.chars_removed)  # fmt: skip
                table = _with_cuts(table, s.cut).filter(pa.array(s.keep))
            splits = [split_of(d, salt, validation_fraction) for d in table["doc_id"].to_pylist()]
            for src, sp in zip(table["source"].to_pylist(), splits, strict=True):
                by_source.setdefault(src, Counter())[sp] += 1
            w.write(table.append_column("split", pa.array(splits, pa.string())))
        n_docs = w.rows
    n_val = sum(c["validation"] for c in by_source.values())
    result: dict[str, Any] = {
        "n_docs": n_docs,
        "n_train": n_docs - n_val,
        "n_validation": n_val,
        "by_source": {
            s: {"train": c["train"], "validation": c["validation"]}
            for s, c in sorted(by_source.items())
        },
    }
    if index is not None:
        result |= {
            "contamination": tally["dropped"],
            "contamination_cut": tally["cut"],
            "contamination_spared": tally["spared"],
            "contamination_chars_removed": tally["chars"],
            "matches": matches,
        }
    return result
