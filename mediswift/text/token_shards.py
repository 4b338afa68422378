"""Token shards (Parquet) and the document shards they are made from.

Token shard columns: `doc_id` (string), `input_ids` (list<uint16> while the vocabulary fits in 16
bits, else list<int32>; the document's BPE ids with EOS appended), `n_tokens` (int32, EOS
included). zstd-compressed, written to a temporary name and renamed, so a shard that exists is
complete. The same documents and tokenizer give the same bytes (no timestamps or paths inside).

Document shards are the filter stage's output (columns in the stage manifest contract); this module
only reads the few columns tokenization needs, with pyarrow, one record batch at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mediswift import digests, interrupt
from mediswift.artifacts import Artifact, tmp_path
from mediswift.text.tokenizer import Tokenizer, document_text

log = logging.getLogger(__name__)

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


def _table(
    doc_ids: Sequence[str], input_ids: Sequence[Sequence[int]], vocab_size: int, where: Path
) -> pa.Table:
    """One batch of documents as a table of the token schema (ids range-checked)."""
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
        raise ValueError(f"{where}: token id outside the vocabulary of {vocab_size}")
    return pa.table(
        {
            "doc_id": pa.array(list(doc_ids), pa.string()),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(dtype))),
            "n_tokens": pa.array(lengths.astype(np.int32)),
        },
        schema=token_schema(vocab_size),
    )


class TokenShardWriter:
    """Streams documents into one token shard, a row group of `ROW_GROUP_DOCS` at a time
    (memory: one row group), under a temporary name renamed into place by `close()`.
    The file is opened on the first document: a writer that gets none leaves no file."""

    def __init__(self, path: Path, vocab_size: int) -> None:
        self.path, self.vocab_size = Path(path), vocab_size
        self.tmp = tmp_path(self.path)
        self.n_docs = self.n_tokens = 0
        self._ids: list[str] = []
        self._tokens: list[Sequence[int]] = []
        self._writer: pq.ParquetWriter | None = None

    def add(self, doc_id: str, ids: Sequence[int]) -> None:
        self._ids.append(doc_id)
        self._tokens.append(ids)
        self.n_docs += 1
        self.n_tokens += len(ids)
        if len(self._ids) >= ROW_GROUP_DOCS:
            self._flush()

    def _flush(self) -> None:
        if not self._ids:
            return
        table = _table(self._ids, self._tokens, self.vocab_size, self.path)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self.tmp,
                table.schema,
                compression=COMPRESSION,
                write_statistics=False,
                store_schema=False,
            )
        self._writer.write_table(table, row_group_size=ROW_GROUP_DOCS)
        self._ids, self._tokens = [], []

    def close(self) -> bool:
        """Finish the file and rename it into place; False when no document was added."""
        try:
            self._flush()
            if self._writer is None:
                return False
            self._writer.close()
            digests.write_sidecar(self.tmp, self.path)  # recorded before the rename
            os.replace(self.tmp, self.path)
            return True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def write_token_shard(
    path: Path, doc_ids: Sequence[str], input_ids: Sequence[Sequence[int]], vocab_size: int
) -> int:
    """Write one token shard atomically from whole lists; returns its token count."""
    writer = TokenShardWriter(path, vocab_size)
    try:
        for doc_id, ids in zip(doc_ids, input_ids, strict=True):
            writer.add(doc_id, ids)
    except BaseException:
        writer.abort()
        raise
    if not writer.close():  # an empty shard is still a valid (empty) file here
        pq.write_table(
            _table([], [], vocab_size, path),
            writer.tmp,
            compression=COMPRESSION,
            write_statistics=False,
            store_schema=False,
        )
        digests.write_sidecar(writer.tmp, path)
        os.replace(writer.tmp, path)
    return writer.n_tokens


def verify_token_shard(path: Path) -> bool:
    """Check a token shard against the digest recorded when it was written (True; False for a
    shard written before digests). A mismatch moves the shard aside, makes its tokenize unit
    and the tokenize stage not done, and raises `DamagedFile` in one line naming it: the next
    run tokenizes that document shard again."""
    try:
        return digests.verify(path)
    except digests.DamagedFile as e:
        raise digests.damaged(e, "token shard") from None


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
    """(doc_id, title, text, split) of a document shard in file order, optionally one split only
    (once the shard matches the digest its writer recorded)."""
    try:
        digests.verify(path)
    except digests.DamagedFile as e:
        raise digests.damaged(e, "document shard") from None
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


def tokenize_document_shard(
    doc_shard: Path, tokenizer: Tokenizer, out_dir: Path, batch_docs: int = 256
) -> list[dict]:
    """Encode every document of one document shard, EOS appended, into one token shard per
    split in `out_dir` (none for a split without documents), streaming: memory holds one batch
    and one row group. Returns [{"path" (file name), "split", "n_docs", "n_tokens"}]."""
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    writers = {
        s: TokenShardWriter(Path(out_dir) / token_shard_name(doc_shard, s), tokenizer.vocab_size)
        for s in SPLITS
    }
    batch: list[tuple[str, str, str]] = []

    def flush() -> None:
        encoded = tokenizer.encode_batch([text for _, text, _ in batch])
        for (doc_id, _, split), enc in zip(batch, encoded, strict=True):
            enc.append(tokenizer.eos_id)
            writers[split].add(doc_id, np.asarray(enc, dtype=dtype))
        batch.clear()

    try:
        for doc_id, title, text, split in iter_documents(doc_shard):
            batch.append((doc_id, document_text(title, text), split))
            if len(batch) >= batch_docs:
                # A stop request reaches a shard tokenized in the run's own process (one
                # worker) within a batch; a pool worker's flag is never set (it dies with the run).
                interrupt.check()
                flush()
        flush()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return [
        {"path": w.path.name, "split": s, "n_docs": w.n_docs, "n_tokens": w.n_tokens}
        for s, w in writers.items()
        if w.close()
    ]


def _relative(path: Path, home: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(home).resolve()))
    except ValueError:
        return str(path)


def _shards_verify(manifest: dict, home: Path) -> bool:
    """Whether every token shard a done unit lists matches its digest; a damaged one is moved
    aside with one warning line naming it (and the unit made again)."""
    for shard in manifest.get("shards", []):
        try:
            verify_token_shard(Path(home) / shard["path"])
        except digests.DamagedFile as e:
            log.warning("%s", e)
            return False
    return True


def tokenize_unit(doc_shard: Path, tokenizer_dir: Path, unit: Artifact, home: Path) -> dict:
    """Tokenize one document shard into the unit directory `unit` (a content-addressed unit of
    the tokenize stage) unless it is done; returns its manifest: {"input", "tokenizer_hash",
    "shards": [{"path" (relative to `home`), "split", "n_docs", "n_tokens"}]}."""
    if unit.done():
        manifest = unit.manifest()
        if _shards_verify(manifest, home):
            return manifest
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
