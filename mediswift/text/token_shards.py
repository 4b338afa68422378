"""Token shards (Parquet) and the document shards they are made from.

Token shard columns: `doc_id` (string), `input_ids` (list<uint16> while the vocabulary fits in 16
bits, else list<int32>; the document's BPE ids with EOS appended), `n_tokens` (int32, EOS
included). zstd-compressed, written to a temporary name and renamed, so a shard that exists is
complete. The same documents and tokenizer give the same bytes (no timestamps or paths inside).

Document shards are the filter stage's output (columns in the stage manifest contract); this module
only reads the few columns tokenization needs, with pyarrow, one record batch at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mediswift.artifacts import Artifact, tmp_path
from mediswift.text.tokenizer import Tokenizer, document_text

SPLITS = ("train", "validation")
DOC_COLUMNS = ("doc_id", "title", "text", "split")
COMPRESSION = "zstd"
ROW_GROUP_DOCS = 8192


def id_type(vocab_size: int) -> pa.DataType:
    return pa.uint16() if vocab_size <= np.iinfo(np.uint16).max + 1 else pa.int32()


def token_schema(vocab_size: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("input_ids", pa.list_(id_type(vocab_size)), nullable=False),
            pa.field("n_tokens", pa.int32(), nullable=False),
        ]
    )


def write_token_shard(
    path: Path, doc_ids: Sequence[str], input_ids: Sequence[Sequence[int]], vocab_size: int
) -> int:
    """Write one token shard atomically; returns its token count."""
    dtype = np.uint16 if id_type(vocab_size) == pa.uint16() else np.int32
    lengths = np.fromiter((len(x) for x in input_ids), dtype=np.int64, count=len(input_ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = (
        np.concatenate([np.asarray(x, dtype=np.int64) for x in input_ids])
        if len(input_ids)
        else np.zeros(0, dtype=np.int64)
    )
    if flat.size and (int(flat.max()) >= vocab_size or int(flat.min()) < 0):
        raise ValueError(f"{path}: token id outside the vocabulary of {vocab_size}")
    flat = flat.astype(dtype)
    schema = token_schema(vocab_size)
    table = pa.table(
        {
            "doc_id": pa.array(list(doc_ids), pa.string()),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            "n_tokens": pa.array(lengths.astype(np.int32)),
        },
        schema=schema,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        pq.write_table(
            table,
            tmp,
            compression=COMPRESSION,
            row_group_size=ROW_GROUP_DOCS,
            write_statistics=False,
            store_schema=False,
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return int(flat.size)


def read_token_counts(path: Path) -> np.ndarray:
    """The `n_tokens` column of a token shard (cheap: one small column)."""
    try:
        return pq.read_table(path, columns=["n_tokens"]).column(0).to_numpy().astype(np.int64)
    except (OSError, pa.ArrowInvalid, KeyError) as e:
        raise ValueError(f"{path}: not a readable token shard: {e}") from e


def read_token_stream(path: Path) -> np.ndarray:
    """All token ids of a shard, documents concatenated in order (EOS already separates them)."""
    try:
        col = pq.read_table(path, columns=["input_ids"]).column(0)
    except (OSError, pa.ArrowInvalid, KeyError) as e:
        raise ValueError(f"{path}: not a readable token shard: {e}") from e
    flat = pc.list_flatten(col)
    if flat.num_chunks == 0:
        return np.zeros(0, dtype=np.uint16)
    return flat.to_numpy()


def read_token_docs(path: Path) -> tuple[list[str], list[list[int]]]:
    """doc ids and their token lists (for tests and inspection; the loader streams instead)."""
    t = pq.read_table(path)
    return t.column("doc_id").to_pylist(), t.column("input_ids").to_pylist()


def iter_documents(
    path: Path, split: str | None = None, batch_docs: int = 2048
) -> Iterator[tuple[str, str | None, str | None, str]]:
    """(doc_id, title, text, split) of a document shard in file order, optionally one split only."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ValueError(f"{path}: not a readable document shard: {e}") from e
    missing = [c for c in DOC_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: document shard lacks column(s) {missing}")
    for batch in pf.iter_batches(batch_size=batch_docs, columns=list(DOC_COLUMNS)):
        cols = [batch.column(c).to_pylist() for c in DOC_COLUMNS]
        for doc_id, title, text, s in zip(*cols, strict=True):
            if s not in SPLITS:
                raise ValueError(f"{path}: document {doc_id!r} has unknown split {s!r}")
            if split is None or s == split:
                yield doc_id, title, text, s


def token_shard_name(doc_shard: Path, split: str) -> str:
    return f"{Path(doc_shard).stem}.{split}.tokens.parquet"


def tokenize_document_shard(doc_shard: Path, tokenizer: Tokenizer, out_dir: Path) -> list[dict]:
    """Encode every document of one document shard, EOS appended, into one token shard per
    split in `out_dir`; returns [{"path", "split", "n_docs", "n_tokens"}] (path: file name)."""
    ids: dict[str, list[str]] = {s: [] for s in SPLITS}
    tokens: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
    batch: list[tuple[str, str, str]] = []

    def flush() -> None:
        encoded = tokenizer.encode_batch([text for _, text, _ in batch])
        for (doc_id, _, split), enc in zip(batch, encoded, strict=True):
            enc.append(tokenizer.eos_id)
            ids[split].append(doc_id)
            tokens[split].append(enc)
        batch.clear()

    for doc_id, title, text, split in iter_documents(doc_shard):
        batch.append((doc_id, document_text(title, text), split))
        if len(batch) >= 256:
            flush()
    flush()
    out = []
    for split in SPLITS:
        if not ids[split]:
            continue  # no documents of this split in this shard: no empty file
        name = token_shard_name(doc_shard, split)
        n = write_token_shard(Path(out_dir) / name, ids[split], tokens[split], tokenizer.vocab_size)
        out.append({"path": name, "split": split, "n_docs": len(ids[split]), "n_tokens": n})
    return out


def _relative(path: Path, home: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(home).resolve()))
    except ValueError:
        return str(path)


def tokenize_unit(doc_shard: Path, tokenizer_dir: Path, unit: Artifact, home: Path) -> dict:
    """Tokenize one document shard into the unit directory `unit` (a content-addressed unit of
    the tokenize stage) unless it is done; returns its manifest: {"input", "tokenizer_hash",
    "shards": [{"path" (relative to `home`), "split", "n_docs", "n_tokens"}]}."""
    if unit.done():
        return unit.manifest()
    tokenizer = Tokenizer.load(tokenizer_dir)
    unit.ensure()
    shards = tokenize_document_shard(doc_shard, tokenizer, unit.path)
    rel = unit.path.relative_to(home)
    return unit.write_manifest(
        {
            "input": _relative(Path(doc_shard), home),
            "tokenizer_hash": tokenizer.hash,
            "vocab_size": tokenizer.vocab_size,
            "shards": [{**s, "path": str(rel / s["path"])} for s in shards],
        }
    )
