"""Learning the vocabulary: Moses-tokenize the train split of the document shards, learn BPE
on it, write the tokenizer files and measure the unknown-piece rate on the validation split."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mediswift.text import moses
from mediswift.text.bpe import learn_bpe
from mediswift.text.token_shards import iter_documents
from mediswift.text.tokenizer import (
    CONFIG_FILE,
    MODEL_FILE,
    Tokenizer,
    document_text,
    unk_rate,
    write_tokenizer_config,
)


def _moses_docs(texts: Iterable[str], workers: int) -> Iterator[str]:
    """Moses-tokenize `texts` in order, in `workers` processes when more than one."""
    if workers <= 1:
        yield from map(moses.moses_tokenize, texts)
        return
    import multiprocessing
    import os

    from mediswift.interrupt import pool_worker_init

    # spawn, not fork: the caller may be a threaded orchestrator process. Workers leave Ctrl-C
    # to the caller and die with it.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=pool_worker_init, initargs=(os.getpid(),)) as pool:
        yield from pool.imap(moses.moses_tokenize, texts, chunksize=64)


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
    """Learn the BPE vocabulary on the train split of `doc_shards` (Moses-tokenized, in
    `workers` processes; the result does not depend on their number) into `out_dir`
    (bpe.model + tokenizer.json) and measure coverage on the validation split."""
    out_dir = Path(out_dir)
    train_texts = (
        document_text(title, text)
        for shard in doc_shards
        for _, title, text, _ in iter_documents(shard, split="train")
    )
    # Closed at once whatever happens (a full disk while writing the model): an abandoned
    # generator would keep its process pool alive until exit, where shutting it down can hang.
    with contextlib.closing(_moses_docs(train_texts, workers)) as docs:
        stats = learn_bpe(
            docs,
            out_dir / MODEL_FILE,
            vocab_size,
            sample_sentences=sample_sentences or None,
            seed=seed,
            character_coverage=character_coverage,
        )
    config = write_tokenizer_config(out_dir)
    tok = Tokenizer.load(out_dir)
    validation = (
        document_text(title, text)
        for shard in doc_shards
        for _, title, text, _ in iter_documents(shard, split="validation")
    )
    rate, n_val = unk_rate(tok, validation)
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
