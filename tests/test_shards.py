"""Document shards: schema v1, round trip, deterministic bytes, sharding, all-or-nothing writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mediswift.data.corpus import CorpusFormatError, parse_corpus_file
from mediswift.data.shards import (
    DOCUMENT_SCHEMA,
    Document,
    iter_documents,
    write_documents,
    write_sharded,
)


def _docs(n: int) -> list[Document]:
    return [
        Document(
            doc_id=f"pmid:{i}",
            source="pubmed",
            title=f"T{i}",
            text=f"abstract {i} é",
            pmid=str(i),
            pmid_version=1,
            year=2000 + i % 20,
            language="eng",
            pub_types=["Journal Article"] if i % 2 else [],
        )  # fmt: skip
        for i in range(n)
    ]


def test_round_trip_and_schema(tmp_path: Path) -> None:
    docs = _docs(5) + [Document(doc_id="x", source="corpus:c")]
    path = tmp_path / "a.parquet"
    assert write_documents(path, docs) == 6
    assert list(iter_documents(path)) == docs
    f = pq.ParquetFile(path)
    assert f.schema_arrow.equals(DOCUMENT_SCHEMA, check_metadata=False)
    assert f.schema_arrow.metadata[b"mediswift.schema"] == b"documents/v3"
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"


def test_same_input_same_bytes(tmp_path: Path) -> None:
    write_documents(tmp_path / "a.parquet", _docs(300))
    write_documents(tmp_path / "b.parquet", _docs(300))
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_sharding(tmp_path: Path) -> None:
    shards = write_sharded(iter(_docs(25)), tmp_path, rows_per_shard=10)
    assert [(p.name, n) for p, n in shards] == [
        ("docs-00000.parquet", 10), ("docs-00001.parquet", 10), ("docs-00002.parquet", 5),
    ]  # fmt: skip
    assert [d.doc_id for p, _ in shards for d in iter_documents(p)] == [
        f"pmid:{i}" for i in range(25)
    ]
    ((empty, n),) = write_sharded(iter([]), tmp_path / "e", rows_per_shard=10)
    assert n == 0 and list(iter_documents(empty)) == []


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> Iterator[Document]:
        yield from _docs(15)
        raise ValueError("input.xml: malformed XML at line 9")

    with pytest.raises(ValueError, match="line 9"):
        write_sharded(broken(), tmp_path, rows_per_shard=10)
    assert list(tmp_path.iterdir()) == []  # neither the finished first shard nor a temp file


def test_corpus_file(tmp_path: Path, mirror_dir: Path) -> None:
    result = parse_corpus_file(
        mirror_dir / "corpus/biomed_text.jsonl", "biomed_text", tmp_path, 5000
    )
    assert [n for _, n in result["shards"]] == [5000, 3163]
    docs = list(iter_documents(result["shards"][0][0]))
    first = docs[0]
    assert (first.doc_id, first.pmid, first.source) == (
        "pmid:6794356",
        "6794356",
        "corpus:biomed_text",
    )
    assert first.title and first.text
    assert all(d.pmid is None for d in docs if not d.doc_id.startswith("pmid:"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": 3}\n')
    with pytest.raises(CorpusFormatError, match="bad.jsonl: line 2"):
        parse_corpus_file(bad, "bad", tmp_path / "bad", 10)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
