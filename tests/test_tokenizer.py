"""The Tokenizer facade: Moses then BPE, round trip on real abstracts, hash, files, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from mediswift.text.bpe import learn_bpe
from mediswift.text.moses import moses_detokenize, moses_tokenize
from mediswift.text.tokenizer import (
    CONFIG_FILE,
    MODEL_FILE,
    Tokenizer,
    document_text,
    unk_rate,
    write_tokenizer_config,
)


@pytest.fixture(scope="module")
def texts(mirror_dir: Path) -> list[str]:
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [document_text(r.get("title"), r["text"]) for r in rows[::8]]  # 1,021 abstracts


def make_tokenizer(directory: Path, texts: list[str], vocab_size: int) -> Tokenizer:
    learn_bpe([moses_tokenize(t) for t in texts], directory / MODEL_FILE, vocab_size)
    write_tokenizer_config(directory)
    return Tokenizer.load(directory)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Tokenizer:
    return make_tokenizer(tmp_path_factory.mktemp("tok"), texts[:800], 2000)


def test_round_trip_on_held_out_abstracts(tok: Tokenizer, texts: list[str]) -> None:
    held_out = texts[800:]
    assert len(held_out) > 200
    for t in held_out:
        ids = tok.encode(t)
        assert ids and all(0 <= i < tok.vocab_size for i in ids)
        # Equal up to Moses normalisation: what Moses detokenization of Moses tokens gives.
        assert tok.decode(ids) == moses_detokenize(moses_tokenize(t))
    # And that normalisation is small: most abstracts come back exactly (whitespace aside).
    same = sum(tok.decode(tok.encode(t)) == " ".join(t.split()) for t in held_out)
    assert same > len(held_out) // 4


def test_batch_and_specials(tok: Tokenizer, texts: list[str]) -> None:
    sample = texts[800:820]
    batch = tok.encode_batch(sample)
    assert batch == [tok.encode(t) for t in sample]
    assert tok.decode_batch(batch) == [tok.decode(ids) for ids in batch]
    assert tok.special_ids == {"pad": 0, "bos": 2, "eos": 3, "unk": 1}
    assert tok.vocab_size == 2000
    # Special ids vanish on decode: an EOS-terminated document decodes to the document.
    assert tok.decode([tok.bos_id, *batch[0], tok.eos_id, tok.pad_id]) == tok.decode(batch[0])
    rate, n = unk_rate(tok, texts[800:])
    assert n > 10_000 and rate < 1e-3  # printable ASCII always has a piece


def test_hash_is_content(tmp_path: Path, tok: Tokenizer, texts: list[str]) -> None:
    again = make_tokenizer(tmp_path / "again", texts[:800], 2000)
    assert again.hash == tok.hash
    other = make_tokenizer(tmp_path / "other", texts[:800], 1500)
    assert other.hash != tok.hash
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.hash == tok.hash and clone.encode(texts[900]) == tok.encode(texts[900])


def test_load_errors(tmp_path: Path, tok: Tokenizer, texts: list[str]) -> None:
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        Tokenizer.load(tmp_path)
    make_tokenizer(tmp_path / "a", texts[:800], 1500)
    make_tokenizer(tmp_path / "b", texts[:800], 1600)
    # A model file from another vocabulary next to this config is refused.
    (tmp_path / "a" / MODEL_FILE).write_bytes((tmp_path / "b" / MODEL_FILE).read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        Tokenizer.load(tmp_path / "a")
    cfg = json.loads((tmp_path / "b" / CONFIG_FILE).read_text())
    cfg["moses"] = {**cfg["moses"], "aggressive_dash_splits": False}
    (tmp_path / "b" / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Moses settings"):
        Tokenizer.load(tmp_path / "b")


def test_document_text() -> None:
    assert document_text("Title.", "Body.") == "Title.\nBody."
    assert document_text(None, "Body.") == "Body."
    assert document_text("Title.", None) == "Title."
