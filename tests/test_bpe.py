"""BPE learning: nothing dropped for length, deterministic files, seeded sampling, clear errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import sentencepiece as spm

from mediswift.text.bpe import (
    SPECIAL_IDS,
    SPM_DEFAULT_MAX_SENTENCE_BYTES,
    learn_bpe,
    sample_indices,
    split_lines,
)
from mediswift.text.moses import moses_tokenize
from mediswift.text.tokenizer import document_text


@pytest.fixture(scope="module")
def moses_docs(mirror_dir: Path) -> list[str]:
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(600), f, strict=False)]
    return [moses_tokenize(document_text(r.get("title"), r["text"])) for r in rows]


def test_split_lines_bounded_and_lossless() -> None:
    doc = " ".join(f"w{i}" for i in range(3000)) + " . tail . " + "x" * 5000 + " end"
    lines = list(split_lines(doc, max_line_bytes=200))
    assert " ".join(lines).split() == doc.split()  # only cut at spaces: same tokens
    assert all(len(line.encode()) <= 200 for line in lines if " " in line)
    assert "x" * 5000 in lines  # a single over-long token is a line of its own
    assert list(split_lines("A b . C d .")) == ["A b .", "C d ."]


def test_long_documents_are_not_dropped(tmp_path: Path, moses_docs: list[str]) -> None:
    # One document far above sentencepiece's default 4192-byte limit, with no sentence end,
    # is the only one holding the character "ѫ" and the word it makes: if the trainer dropped
    # it, neither could be in the vocabulary.
    long_doc = " ".join(["ѫѫѫ ѫѫѫ biomarker"] * 800)
    assert len(long_doc.encode()) > 4 * SPM_DEFAULT_MAX_SENTENCE_BYTES
    stats = learn_bpe([*moses_docs, long_doc], tmp_path / "bpe.model", 1200, character_coverage=1.0)
    assert stats.skipped_by_trainer == 0
    assert stats.n_docs == len(moses_docs) + 1
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    assert sp.piece_to_id("▁ѫѫѫ") != sp.unk_id()

    # The hazard is real: sentencepiece's defaults with whole documents as lines lose it.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*moses_docs, long_doc]),
        model_writer=model,
        model_type="bpe",
        vocab_size=1200,
        character_coverage=1.0,
        minloglevel=2,
    )
    stock = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert stock.piece_to_id("▁ѫѫѫ") == stock.unk_id()


def test_same_corpus_same_bytes(tmp_path: Path, moses_docs: list[str]) -> None:
    a, b, c = (tmp_path / x / "bpe.model" for x in "abc")
    learn_bpe(moses_docs, a, 1000, sample_sentences=2000, seed=7)
    learn_bpe(moses_docs, b, 1000, sample_sentences=2000, seed=7)
    learn_bpe(moses_docs, c, 1000, sample_sentences=2000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # another seed samples other lines
    sp = spm.SentencePieceProcessor(model_file=str(a))
    assert sp.get_piece_size() == 1000
    assert {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()} == (
        SPECIAL_IDS
    )
    # No temporary path leaks into the model (it would break byte-identity across runs).
    assert str(tmp_path).encode() not in a.read_bytes()


def test_sample_indices() -> None:
    assert sample_indices(10, None, 0) is None
    assert sample_indices(10, 20, 0) is None
    s = sample_indices(1000, 100, 3)
    assert s == sorted(set(s)) and len(s) == 100 and s == sample_indices(1000, 100, 3)
    assert s != sample_indices(1000, 100, 4)


def test_errors(tmp_path: Path, moses_docs: list[str]) -> None:
    with pytest.raises(ValueError, match="empty"):
        learn_bpe([], tmp_path / "bpe.model", 100)
    with pytest.raises(ValueError, match="smaller vocab_size"):
        learn_bpe(moses_docs[:3], tmp_path / "bpe.model", 50_000)
    assert not (tmp_path / "bpe.model").exists()  # nothing half-written
