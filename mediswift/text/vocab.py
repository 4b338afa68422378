"""Learning the vocabulary: Moses-tokenize the train split of the document shards, learn BPE
on it, write the tokenizer files and measure the unknown-piece rate on the validation split.

The Moses pass can run shard by shard, anywhere (`moses_shard` writes one shard's Moses text to
a Parquet file), and the learning reads those files back in shard order (`learn_vocab`): the
trainer then sees exactly the documents, in the same order, as when one process tokenizes them
all (`build_vocab`), so the tokenizer files are byte-identical."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mediswift import interrupt
from mediswift.artifacts import tmp_path
from mediswift.text import moses
from mediswift.text.bpe import learn_bpe
from mediswift.text.token_shards import COMPRESSION, iter_documents
from mediswift.text.tokenizer import (
    CONFIG_FILE,
    MODEL_FILE,
    Tokenizer,
    document_text,
    unk_rate,
    write_tokenizer_config,
)

# A Moses file: one row per train document of its shard, in shard order.
MOSES_SCHEMA = pa.schema([pa.field("moses", pa.string(), nullable=False)])
# Row groups are cut by size, not count: a PMC article is ~30 kB, an abstract ~1.4 kB, and
# reading one row group back must stay small whatever the mix.
ROW_GROUP_CHARS = 16 << 20
ROW_GROUP_MAX_DOCS = 8192
# Documents per stop check and per read batch.
BATCH_DOCS = 256


def split_texts(doc_shards: Iterable[Path], split: str) -> Iterator[str]:
    """The text of every document of `split`, shard by shard, in file order."""
    for shard in doc_shards:
        for _, title, text, _ in iter_documents(shard, split=split):
            yield document_text(title, text)


def _moses_docs(texts: Iterable[str], workers: int) -> Iterator[str]:
    """Moses-tokenize `texts` in order, in `workers` processes when more than one."""
    if workers <= 1:
        yield from map(moses.moses_tokenize, texts)
        return
    import multiprocessing

    from mediswift.interrupt import pool_worker_init

    # spawn, not fork: the caller may be a threaded orchestrator process. Workers leave Ctrl-C
    # to the caller and die with it.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=pool_worker_init, initargs=(os.getpid(),)) as pool:
        yield from pool.imap(moses.moses_tokenize, texts, chunksize=64)


class _MosesWriter:
    """Streams Moses documents into one Parquet file under a temporary name; `close()` renames
    it into place. Same documents -> same bytes (no statistics, timestamps or paths inside)."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = Path(path), tmp_path(Path(path))
        self.n_docs = self.n_chars = 0
        self._rows: list[str] = []
        self._chars = 0  # in `_rows`
        self._writer = pq.ParquetWriter(
            self.tmp, MOSES_SCHEMA, compression=COMPRESSION, write_statistics=False,
            store_schema=False,
        )  # fmt: skip

    def add(self, doc: str) -> None:
        self._rows.append(doc)
        self._chars += len(doc)
        self.n_docs += 1
        self.n_chars += len(doc)
        if self._chars >= ROW_GROUP_CHARS or len(self._rows) >= ROW_GROUP_MAX_DOCS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.table({"moses": self._rows}, schema=MOSES_SCHEMA))
        self._rows, self._chars = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def moses_shard(doc_shard: Path, out_file: Path) -> dict[str, int]:
    """Moses-tokenize the train split of one document shard, in file order, into `out_file`
    (Parquet, one `moses` string per document; a shard without train documents gives a file
    with no rows). Streaming: memory holds one row group. Returns the counts of documents,
    characters read and characters written."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = _MosesWriter(out_file)
    text_chars = 0
    try:
        for i, text in enumerate(split_texts([doc_shard], "train")):
            if i % BATCH_DOCS == 0:
                # A stop request reaches a shard tokenized in the run's own process.
                interrupt.check()
            text_chars += len(text)
            writer.add(moses.moses_tokenize(text))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"n_docs": writer.n_docs, "text_chars": text_chars, "moses_chars": writer.n_chars}


def read_moses_file(path: Path) -> Iterator[str]:
    """The Moses documents of a file written by `moses_shard`, in order (one batch in memory)."""
    try:
        pf = pq.ParquetFile(path)
        if pf.schema_arrow.names != MOSES_SCHEMA.names:
            raise ValueError(f"columns {pf.schema_arrow.names}, not {MOSES_SCHEMA.names}")
    except (OSError, pa.ArrowInvalid, ValueError) as e:
        raise ValueError(f"{path}: not a Moses file of the vocab stage: {e}") from e
    for batch in pf.iter_batches(batch_size=BATCH_DOCS, columns=["moses"]):
        yield from batch.column(0).to_pylist()


def learn_vocab(
    moses_docs: Iterable[str],
    doc_shards: Sequence[Path],
    out_dir: Path,
    *,
    vocab_size: int,
    sample_sentences: int | None,
    seed: int,
    character_coverage: float,
) -> dict[str, Any]:
    """Learn the BPE vocabulary on `moses_docs` (the train split of `doc_shards`, Moses-
    tokenized, in shard order) into `out_dir` (bpe.model + tokenizer.json) and measure
    coverage on the validation split of `doc_shards`."""
    out_dir = Path(out_dir)
    stats = learn_bpe(
        moses_docs,
        out_dir / MODEL_FILE,
        vocab_size,
        sample_sentences=sample_sentences or None,
        seed=seed,
        character_coverage=character_coverage,
    )
    config = write_tokenizer_config(out_dir)
    rate, n_val = unk_rate(Tokenizer.load(out_dir), split_texts(doc_shards, "validation"))
    return {
        "vocab_size": config["vocab_size"],
        "hash": config["hash"],
        "special_ids": config["special_ids"],
        "files": [MODEL_FILE, CONFIG_FILE],
        "unk_rate_validation": rate,
        "validation_tokens": n_val,
        "train_docs": stats.n_docs,
        "train_lines": stats.n_lines,
        "sampled_lines": stats.n_sampled,
        "longest_line_bytes": stats.max_line_bytes,
        "moses": moses.SETTINGS,
    }


def build_vocab(
    doc_shards: Sequence[Path],
    out_dir: Path,
    *,
    vocab_size: int,
    sample_sentences: int | None,
    seed: int,
    character_coverage: float,
    workers: int = 1,
) -> dict[str, Any]:
    """`learn_vocab` with the Moses pass in this process (in `workers` processes when more
    than one; the result does not depend on their number): the whole vocabulary on one node,
    as the vocab stage made it before its Moses pass fanned out (`moses_shard`)."""
    texts = split_texts(doc_shards, "train")
    # Closed at once whatever happens (a full disk while writing the model): an abandoned
    # generator would keep its process pool alive until exit, where shutting it down can hang.
    with contextlib.closing(_moses_docs(texts, workers)) as docs:
        return learn_vocab(
            docs, doc_shards, out_dir, vocab_size=vocab_size, sample_sentences=sample_sentences,
            seed=seed, character_coverage=character_coverage,
        )  # fmt: skip
