"""Filtering and the train/validation split, as the paper's Section 3.1 and Table 1 describe.

Two passes over the document shards, memory bounded by the number of PubMed records (a few
numpy arrays), never by the text:

1. `plan_filter` reads the small columns of every shard in order and gives each row a reason
   code (0 = keep), the first that applies of:
   - `superseded`: an older copy of a PMID; the latest wins, ordered by (shard position, i.e.
     file order: baseline before updates, then PMID Version, then row within the file);
   - `deleted`: the winning copy of a PMID that a `DeleteCitation` in the same or a later file
     removes (a copy re-sent in a file after the deletion stands);
   - `empty_text`: title-only records (no abstract / empty text), as the paper drops them;
   - `language`: the record's language is known and not in `FilterConfig.languages` (records
     of unknown language, such as corpus texts, are kept);
   - `duplicate`: a doc_id already kept earlier in shard order (PubMed, then PMC, then corpora;
     doc_ids are compared as 64-bit BLAKE2b digests, so memory stays ~12 bytes a document).
2. `apply_plan` writes one filtered shard per input shard: the kept rows, in order, with
   `split` = `validation` for a stable ~3% of doc_ids (`split_of`), else `train`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mediswift.data.shards import FILTERED_SCHEMA, ShardWriter, iter_batches, num_rows

REASONS: tuple[str, ...] = ("keep", "superseded", "deleted", "empty_text", "language", "duplicate")
KEEP, SUPERSEDED, DELETED, EMPTY, LANGUAGE, DUPLICATE = range(len(REASONS))


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


def plan_filter(
    shards: Sequence[ShardRef], min_text_chars: int = 1, languages: Sequence[str] | None = None
) -> tuple[list[np.ndarray], dict[str, int]]:
    """A reason code (uint8, see REASONS) for every row of every shard, and the dropped counts."""
    codes: list[np.ndarray] = []
    # PubMed rows: pmid, version, shard, row (for "latest wins").
    pm_pmid, pm_ver, pm_shard, pm_row = [], [], [], []
    deleted_at: dict[int, int] = {}  # pmid -> last shard index that deletes it
    wanted = set(languages) if languages else None
    for i, ref in enumerate(shards):
        for pmid in ref.deleted_pmids:
            deleted_at[int(pmid)] = i
        parts = []
        start = 0
        for batch in iter_batches(ref.path, ["pmid", "pmid_version", "text", "language"]):
            n = batch.num_rows
            code = np.zeros(n, dtype=np.uint8)
            lengths = pc.fill_null(pc.utf8_length(batch.column("text")), 0).to_numpy(
                zero_copy_only=False
            )
            code[lengths < min_text_chars] = EMPTY
            if wanted is not None:
                lang = batch.column("language").to_pylist()
                bad = np.fromiter(
                    (x is not None and x not in wanted for x in lang), dtype=bool, count=n
                )
                code[(code == KEEP) & bad] = LANGUAGE
            if ref.source == "pubmed":
                pmid = pc.cast(batch.column("pmid"), pa.int64()).to_numpy(zero_copy_only=False)
                ver = pc.fill_null(batch.column("pmid_version"), 1).to_numpy(zero_copy_only=False)
                pm_pmid.append(pmid.astype(np.int64))
                pm_ver.append(ver.astype(np.int32))
                pm_shard.append(np.full(n, i, dtype=np.int32))
                pm_row.append(np.arange(start, start + n, dtype=np.int32))
            parts.append(code)
            start += n
        codes.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8))

    if pm_pmid:
        pmid, ver = np.concatenate(pm_pmid), np.concatenate(pm_ver)
        shard, row = np.concatenate(pm_shard), np.concatenate(pm_row)
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

    _mark_duplicates(shards, codes)
    dropped: Counter[str] = Counter()
    for code in codes:
        counts = np.bincount(code, minlength=len(REASONS))
        for k in range(1, len(REASONS)):
            dropped[REASONS[k]] += int(counts[k])
    return codes, {r: dropped[r] for r in REASONS[1:]}


def _mark_duplicates(shards: Sequence[ShardRef], codes: list[np.ndarray]) -> None:
    """Mark rows whose doc_id was kept earlier (in shard order) as duplicates.

    Memory: 8 bytes of digest + 4 bytes of row index per kept row (numpy), no Python set."""
    digests: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for ref, code in zip(shards, codes, strict=True):
        start = 0
        for batch in iter_batches(ref.path, ["doc_id"]):
            ids = batch.column("doc_id").to_pylist()
            keep = np.flatnonzero(code[start : start + len(ids)] == KEEP)
            digests.append(np.fromiter((_id_hash(ids[j]) for j in keep), np.uint64, len(keep)))
            rows.append((keep + start).astype(np.int32))
            start += len(ids)
    if not digests:
        return
    digest = np.concatenate(digests)
    del digests
    _, first = np.unique(digest, return_index=True)  # index of each digest's first occurrence
    dup = np.ones(len(digest), dtype=bool)
    dup[first] = False
    # Map positions back to (shard, row): kept rows were appended shard by shard, in order.
    per_shard = np.cumsum([0] + [int((c == KEEP).sum()) for c in codes])
    row = np.concatenate(rows)
    for pos in np.flatnonzero(dup):
        i = int(np.searchsorted(per_shard, pos, side="right")) - 1
        codes[i][row[pos]] = DUPLICATE


def apply_plan(
    shard: Path, codes: np.ndarray, out: Path, salt: str, validation_fraction: float
) -> dict[str, Any]:
    """Write the kept rows of `shard` (codes == 0) to `out` with a `split` column."""
    rows = num_rows(shard)
    if rows != len(codes):
        raise ValueError(f"{shard}: {rows} rows but the filter plan has {len(codes)} rows")
    by_source: dict[str, Counter[str]] = {}
    start = 0
    with ShardWriter(out, FILTERED_SCHEMA) as w:
        for batch in iter_batches(shard):
            n = batch.num_rows
            keep = codes[start : start + n] == KEEP
            start += n
            table = pa.Table.from_batches([batch]).filter(pa.array(keep))
            splits = [split_of(d, salt, validation_fraction) for d in table["doc_id"].to_pylist()]
            for src, sp in zip(table["source"].to_pylist(), splits, strict=True):
                by_source.setdefault(src, Counter())[sp] += 1
            w.write(table.append_column("split", pa.array(splits, pa.string())))
        n_docs = w.rows
    n_val = sum(c["validation"] for c in by_source.values())
    return {
        "n_docs": n_docs,
        "n_train": n_docs - n_val,
        "n_validation": n_val,
        "by_source": {
            s: {"train": c["train"], "validation": c["validation"]}
            for s, c in sorted(by_source.items())
        },
    }
