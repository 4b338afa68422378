"""Learning the BPE vocabulary with sentencepiece on Moses-tokenized text.

The trainer sees lines of Moses tokens. A document is cut into sentence-like lines (after a `.`
token, and at a space whenever a line would pass `max_line_bytes`), because sentencepiece
silently skips any input line longer than its `max_sentence_length` (4192 bytes by default):
with whole documents as lines it dropped 52 long documents of the mirror corpus. Cutting at
spaces changes nothing the BPE trainer counts (pieces never cross whitespace), and the trainer's
`max_sentence_length` is set above the longest line, so no line is ever skipped; the trainer's
own log is checked for skips as well.

Determinism: the sample of lines is drawn by us with a seeded RNG (sentencepiece's own sampling
and shuffling are off), the trainer runs on one thread, and the model is written from memory so
that no temporary path ends up inside it. Same lines + same settings -> byte-identical model.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from mediswift.artifacts import scratch_dir

# Special pieces and their ids (fixed, so every tokenizer of the project agrees on them).
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_IDS = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}

# sentencepiece's default limit; lines are cut well below it.
SPM_DEFAULT_MAX_SENTENCE_BYTES = 4192
MAX_LINE_BYTES = 2048

# Printable ASCII always gets a piece, however rare in the sample: `character_coverage` < 1 drops
# the rarest characters, and on a small corpus those include `<`, `>`, `~`, `*`, `{`, `}` (common in
# biomedical text: "p < 0.05"), which would otherwise become <unk>.
REQUIRED_CHARS = "".join(chr(c) for c in range(33, 127))

_SKIPPED = re.compile(r"Skipped (\d+) too long sentences")


def split_lines(moses_text: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Cut one Moses-tokenized document into lines: after each `.` token, and at a space before
    a line would exceed `max_line_bytes` (a single longer token becomes a line of its own)."""
    line: list[str] = []
    size = 0
    for tok in moses_text.split():
        n = len(tok.encode()) + (1 if line else 0)
        if line and size + n > max_line_bytes:
            yield " ".join(line)
            line, size, n = [], 0, n - 1
        line.append(tok)
        size += n
        if tok == ".":
            yield " ".join(line)
            line, size = [], 0
    if line:
        yield " ".join(line)


def sample_indices(n_total: int, n_sample: int | None, seed: int) -> list[int] | None:
    """Sorted indices of a seeded uniform sample of `n_sample` out of `n_total` (None: all)."""
    if n_sample is None or n_sample <= 0 or n_sample >= n_total:
        return None
    return sorted(random.Random(seed).sample(range(n_total), n_sample))


@dataclass(frozen=True)
class BpeStats:
    """What learning saw: documents, lines written, lines sampled, longest line (bytes)."""

    n_docs: int
    n_lines: int
    n_sampled: int
    max_line_bytes: int
    skipped_by_trainer: int


def _selected(lines_file: Path, keep: list[int] | None) -> Iterator[str]:
    with open(lines_file, encoding="utf-8") as f:
        if keep is None:
            for line in f:
                yield line.rstrip("\n")
            return
        want = iter(keep)
        nxt = next(want, -1)
        for i, line in enumerate(f):
            if i == nxt:
                yield line.rstrip("\n")
                nxt = next(want, -1)
                if nxt < 0:
                    return


def learn_bpe(
    moses_docs: Iterable[str],
    model_path: Path,
    vocab_size: int,
    *,
    sample_sentences: int | None = None,
    seed: int = 0,
    character_coverage: float = 0.9999,
    num_threads: int = 1,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> BpeStats:
    """Learn a sentencepiece BPE model of `vocab_size` pieces (specials included) from
    Moses-tokenized documents and write it atomically to `model_path`.

    Lines go through a temporary file so that memory stays bounded by the sample, not the
    corpus. Raises ValueError when the corpus is empty or too small for `vocab_size`, and
    RuntimeError if the trainer reports skipped lines (it must not, by construction).
    """
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    # Named like `tmp_path` files, so a killed run's leftover is swept by the next one.
    with scratch_dir(model_path.parent / "bpe") as tmp:
        lines_file = Path(tmp) / "lines.txt"
        n_docs, n_lines, longest = _write_lines(moses_docs, lines_file, max_line_bytes)
        if n_lines == 0:
            raise ValueError("no training text for BPE: the train split is empty")
        keep = sample_indices(n_lines, sample_sentences, seed)
        n_sampled = n_lines if keep is None else len(keep)
        model = io.BytesIO()
        options = dict(
            sentence_iterator=_selected(lines_file, keep),
            model_writer=model,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            max_sentence_length=max(SPM_DEFAULT_MAX_SENTENCE_BYTES, longest + 1),
            num_threads=num_threads,
            **TRAINER_OPTIONS,
        )
        try:
            skipped = _train_logged(options, Path(tmp) / "trainer.log")
        except RuntimeError as e:
            if "Vocabulary size" in str(e) or "vocab_size" in str(e):
                raise ValueError(
                    f"BPE vocabulary of {vocab_size} does not fit a corpus of {n_lines} lines "
                    f"({n_docs} documents): choose a smaller vocab_size ({e})"
                ) from e
            raise
        if skipped:
            raise RuntimeError(f"sentencepiece skipped {skipped} lines longer than its limit")
        tmp_model = Path(tmp) / "model"
        tmp_model.write_bytes(model.getvalue())
        os.replace(tmp_model, model_path)
    return BpeStats(n_docs, n_lines, n_sampled, longest, skipped)


# What every BPE model of the project is trained with, whatever the corpus.
TRAINER_OPTIONS = dict(
    model_type="bpe",
    required_chars=REQUIRED_CHARS,
    input_sentence_size=0,  # we sampled already: the trainer takes every line given
    shuffle_input_sentence=False,
    # Moses output is already normalised text; keep it byte-exact so decode is exact.
    normalization_rule_name="identity",
    pad_id=SPECIAL_IDS["pad"],
    unk_id=SPECIAL_IDS["unk"],
    bos_id=SPECIAL_IDS["bos"],
    eos_id=SPECIAL_IDS["eos"],
    pad_piece=PAD,
    unk_piece=UNK,
    bos_piece=BOS,
    eos_piece=EOS,
    minloglevel=0,
)


def _write_lines(
    moses_docs: Iterable[str], path: Path, max_line_bytes: int
) -> tuple[int, int, int]:
    """The documents' lines into `path`, one per line; (documents, lines, longest line's
    bytes)."""
    n_docs = n_lines = longest = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in moses_docs:
            n_docs += 1
            for line in split_lines(doc, max_line_bytes):
                f.write(line + "\n")
                n_lines += 1
                longest = max(longest, len(line.encode()))
    return n_docs, n_lines, longest


def _train_logged(options: dict, log_path: Path) -> int:
    """Train, capturing the trainer's stderr log where the process allows it; returns the
    number of lines the trainer reports as skipped for length (0 when no log was captured)."""
    try:
        with open(log_path, "w+", encoding="utf-8") as log:
            spm.SentencePieceTrainer.train(logstream=log, **options)
            log.seek(0)
            text = log.read()
    except io.UnsupportedOperation:  # stderr without a file descriptor (some test captures)
        options["minloglevel"] = 1
        spm.SentencePieceTrainer.train(**options)
        return 0
    return sum(int(m) for m in _SKIPPED.findall(text))
