"""Document Parquet shards: the record type, its versioned schema, a writer and readers.

Schema v3 (one row a document, in input order):

| column | type | meaning |
|---|---|---|
| doc_id | string | `pmid:<n>`, `pmc:PMC<n>`, or a corpus record's own id |
| source | string | `pubmed`, `pmc`, or `corpus:<name>` |
| pmid, pmcid, doi | string? | identifiers when known |
| pmid_version | int32? | PubMed `<PMID Version>` (1 for almost every citation) |
| title | string | title (may be empty) |
| text | string | PubMed: the abstract; PMC: abstract + body; corpus: the record's text |
| year | int32? | publication year |
| revised | string? | PubMed's DateRevised, YYYY-MM-DD (None elsewhere) |
| published | string? | PMC's earliest publication date, YYYY-MM-DD (None elsewhere) |
| language | string? | ISO 639-2 code as PubMed writes it (`eng`) |
| pub_types | list<string> | PubMed publication types, PMC article-type |
| license | string? | PMC licence (URL or type) |

After filtering the same schema gains `split` (`train` | `validation`). Row order within a shard
is the record order of its input file: the filter relies on it for "latest wins".

Shards are written with zstd to a temporary name and renamed, with no timestamps or writer
options that vary between runs, so the same input gives the same bytes. Each shard's size and
sha256 are recorded beside it (`<shard>.digest.json`, before the rename) and checked by the
readers here before they read it (`mediswift.digests`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mediswift import digests
from mediswift.artifacts import tmp_path

# 2: `revised` (PubMed DateRevised), for the snapshot cut-off. 3: `published` (PMC publication
# date), so the snapshot cut-off reaches PMC too.
SCHEMA_VERSION = 3

DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("pmid", pa.string()),
        ("pmcid", pa.string()),
        ("doi", pa.string()),
        ("pmid_version", pa.int32()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("year", pa.int32()),
        ("revised", pa.string()),  # YYYY-MM-DD: PubMed's DateRevised (None elsewhere)
        ("published", pa.string()),  # YYYY-MM-DD: PMC's earliest pub-date (None elsewhere)
        ("language", pa.string()),
        ("pub_types", pa.list_(pa.string())),
        ("license", pa.string()),
    ],
    metadata={"mediswift.schema": f"documents/v{SCHEMA_VERSION}"},
)

SPLIT_FIELD = pa.field("split", pa.string())
FILTERED_SCHEMA = DOCUMENT_SCHEMA.append(SPLIT_FIELD).with_metadata(
    {"mediswift.schema": f"documents-split/v{SCHEMA_VERSION}"}
)

ROW_GROUP_ROWS = 10_000


@dataclass(slots=True)
class Document:
    """One parsed record (schema v3). Parsers produce these; shards store them."""

    doc_id: str
    source: str
    title: str = ""
    text: str = ""
    pmid: str | None = None
    pmcid: str | None = None
    doi: str | None = None
    pmid_version: int | None = None
    year: int | None = None
    revised: str | None = None
    published: str | None = None
    language: str | None = None
    pub_types: list[str] = field(default_factory=list)
    license: str | None = None


_COLUMNS = [f.name for f in fields(Document)]
assert set(_COLUMNS) == set(DOCUMENT_SCHEMA.names), "Document and DOCUMENT_SCHEMA disagree"


def documents_table(docs: Iterable[Document]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in DOCUMENT_SCHEMA.names}
    for d in docs:
        for name in DOCUMENT_SCHEMA.names:
            cols[name].append(getattr(d, name))
    return pa.table(cols, schema=DOCUMENT_SCHEMA)


class ShardWriter:
    """Write a shard row group by row group to a temporary name; `close()` renames it.

    Use as a context manager: on an exception the temporary file is removed and nothing
    appears under the final name.
    """

    def __init__(self, path: Path, schema: pa.Schema = DOCUMENT_SCHEMA) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path(self.path)
        self.schema = schema
        self.rows = 0
        self._writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression="zstd",
            compression_level=3,
            write_statistics=False,  # statistics of long text columns only cost space
            store_schema=True,
        )

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema), row_group_size=ROW_GROUP_ROWS)
            self.rows += table.num_rows

    def close(self) -> Path:
        self._writer.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        digests.write_sidecar(self.tmp, self.path)  # recorded before the rename
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_documents(path: Path, docs: Iterable[Document], batch: int = ROW_GROUP_ROWS) -> int:
    """Stream documents into one shard (batched, so memory is bounded); returns the row count."""
    buf: list[Document] = []
    with ShardWriter(path) as w:
        for d in docs:
            buf.append(d)
            if len(buf) >= batch:
                w.write(documents_table(buf))
                buf.clear()
        w.write(documents_table(buf))
        return w.rows


def write_sharded(
    docs: Iterable[Document], out_dir: Path, rows_per_shard: int, prefix: str = "docs"
) -> list[tuple[Path, int]]:
    """Stream documents into `out_dir/<prefix>-00000.parquet`, ... of at most `rows_per_shard`
    rows each; returns [(path, rows)]. Always writes at least one (possibly empty) shard.

    All or nothing: if `docs` raises, every shard written so far is removed and the error
    propagates, so a failed input never leaves shards behind.
    """
    done: list[tuple[Path, int]] = []
    writer: ShardWriter | None = None
    buf: list[Document] = []
    batch = min(rows_per_shard, ROW_GROUP_ROWS)

    def flush() -> None:
        nonlocal writer
        if writer is None:
            writer = ShardWriter(out_dir / f"{prefix}-{len(done):05d}.parquet")
        writer.write(documents_table(buf))
        buf.clear()
        if writer.rows >= rows_per_shard:
            done.append((writer.close(), writer.rows))
            writer = None

    try:
        for d in docs:
            buf.append(d)
            current = writer.rows if writer is not None else 0
            if len(buf) >= batch or current + len(buf) >= rows_per_shard:
                flush()
        if buf or writer is not None or not done:
            flush()
            if writer is not None:
                done.append((writer.close(), writer.rows))
                writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        for path, _ in done:
            path.unlink(missing_ok=True)
            digests.sidecar(path).unlink(missing_ok=True)
        raise
    return done


def verify_shard(path: Path) -> bool:
    """Check a document shard against the digest recorded when it was written (True; False
    for a shard written before digests). A mismatch moves it aside, makes the unit that wrote
    it (and its stage) not done, and raises `DamagedFile` in one line naming it: the next run
    makes it again (`mediswift.digests`)."""
    try:
        return digests.verify(path)
    except digests.DamagedFile as e:
        raise digests.damaged(e, "document shard") from None


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    verify_shard(path)
    return pq.read_table(path, columns=columns)


def iter_batches(
    path: Path, columns: list[str] | None = None, batch_size: int = ROW_GROUP_ROWS
) -> Iterator[pa.RecordBatch]:
    """Record batches of a shard, in row order (bounded memory for any shard size), once the
    shard matches its digest."""
    verify_shard(path)
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def iter_documents(path: Path) -> Iterator[Document]:
    """The documents of a shard (schema v1 columns only), in row order."""
    for batch in iter_batches(path, columns=list(DOCUMENT_SCHEMA.names)):
        for row in batch.to_pylist():
            yield Document(**row)


def num_rows(path: Path) -> int:
    verify_shard(path)
    return pq.ParquetFile(path).metadata.num_rows
