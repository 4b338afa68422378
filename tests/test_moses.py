"""Our Moses step gives exactly stock sacremoses' output (English, -a, no escaping)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sacremoses import MosesTokenizer

from mediswift.text.moses import (
    FastMosesTokenizer,
    moses_detokenize,
    moses_tokenize,
    stock_tokenize,
)
from mediswift.text.tokenizer import document_text


def corpus_texts(mirror_dir: Path) -> list[str]:
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        return [document_text(r.get("title"), r["text"]) for r in map(json.loads, f)]


# Hand-made cases for every rule the fast path touches: nonbreaking prefixes (plain and
# numeric-only), lowercase continuation, multi-dots, apostrophes, commas in numbers, dashes,
# control characters, non-ASCII letters and digits.
EDGE_CASES = [
    "Dr. Smith et al. reported p < 0.05 (n = 12) in Fig. 3.",
    "See No. 5 and No. five; Art. 12 vs. art. twelve.",
    "It's the patients' choice... or is it?? 'quoted' \"double\" ``tex''",
    "1,000,000 cells, i.e. a lot; e.g. T-cells and IL-2-dependent B-cell lines.",
    "Wait.... what..... ok.. fine.",
    "The 5'-UTR and 3' end; O'Neil's data; rock 'n' roll '90s.",
    "ASCII\x01junk\x02here\tand\ttabs\nnewlines\r\n and   spaces ",
    "Ca²⁺ and α-β-γ; ½ dose; 10⁻³ M; naïve café Zürich; ½.",
    "U.S.A. and U.K. studies. A.B. Smith. x.y. lower.",
    "mg/kg/day — 5–10 % – range; http://example.org/a-b and user@example.org.",
    "End with abbreviation Mr.",
    "DOTMULTI and DOTDOTMULTI and THISISPROTECTED000 literal markers...",
    "",
    "   ",
    ".",
    "'",
]


@pytest.fixture(scope="module")
def stock() -> MosesTokenizer:
    return MosesTokenizer(lang="en")


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_identical(stock: MosesTokenizer, text: str) -> None:
    assert moses_tokenize(text) == stock_tokenize(stock, text)


def test_sample_of_mirror_corpus_identical(mirror_dir: Path, stock: MosesTokenizer) -> None:
    texts = corpus_texts(mirror_dir)
    assert len(texts) == 8163
    fast = FastMosesTokenizer()
    sample = texts[::16]  # deterministic, spread over every source of the corpus
    mismatches = [t for t in sample if fast.tokenize_str(t) != stock_tokenize(stock, t)]
    assert not mismatches, mismatches[:1]


@pytest.mark.slow
def test_whole_mirror_corpus_identical(mirror_dir: Path, stock: MosesTokenizer) -> None:
    fast = FastMosesTokenizer()
    texts = corpus_texts(mirror_dir)
    mismatches = [
        i for i, t in enumerate(texts) if fast.tokenize_str(t) != stock_tokenize(stock, t)
    ]
    assert not mismatches, f"{len(mismatches)} documents differ, first {mismatches[:5]}"


def test_stock_tokenizer_not_patched(stock: MosesTokenizer) -> None:
    FastMosesTokenizer()
    assert type(stock).islower is MosesTokenizer.islower
    assert MosesTokenizer.handles_nonbreaking_prefixes is not (
        FastMosesTokenizer.handles_nonbreaking_prefixes
    )


def test_only_english_rules() -> None:
    with pytest.raises(ValueError, match="English"):
        FastMosesTokenizer("fr")


def test_dash_split_and_detokenize() -> None:
    toks = moses_tokenize("IL-2-dependent cells (p<0.05).")
    assert toks == "IL @-@ 2 @-@ dependent cells ( p < 0.05 ) ."
    assert moses_detokenize(toks) == "IL-2-dependent cells (p < 0.05)."
