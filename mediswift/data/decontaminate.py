"""What decontamination does to a corpus text that shares n-grams with evaluation examples, as
GPT-3 did it (Brown et al. 2020, Appendix C), given the hits `NgramIndex.find` confirmed:

- The boilerplate guard: an n-gram found in more than `max_docs` corpus documents (GPT-3: 10)
  is ignored: such n-grams are mostly legal, label or methods boilerplate worth learning, not a
  test example copied into the corpus. `document_counts` counts, per n-gram hash, the documents
  holding it (one shard at a time; the filter sums the shards and keeps the frequent hashes).
  A text whose every hit is ignored is kept whole (`spared`).
- `document` mode drops a text with any remaining hit (the default).
- `window` mode (GPT-3's) removes each remaining n-gram and `WINDOW_CHARS` characters either
  side of it, which splits the text into pieces; pieces under `MIN_PIECE_CHARS` are discarded,
  and a text split into more than `MAX_PIECES` pieces (before that discarding) is dropped whole,
  as is one with no piece left. The kept pieces, joined by a blank line, become the text.

Hits are word positions in the normalised text (`contamination.normalise`); `word_spans` finds
the same words in the original string, so the cut is made on the text as written.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mediswift.data.contamination import Match, NgramIndex, normalise

MODES = ("document", "window")
# GPT-3's numbers (Appendix C).
WINDOW_CHARS = 200
MIN_PIECE_CHARS = 200
MAX_PIECES = 10
PIECE_JOIN = "\n\n"
_SPACE = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85")  # and every Unicode separator (Z*)


def document_counts(matches: Sequence[Match]) -> Counter[int]:
    """n-gram hash -> the number of texts holding it (each text counted once per n-gram)."""
    out: Counter[int] = Counter()
    for m in matches:
        out.update({h.hash for h in m.hits})
    return out


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets in `text` of every word `normalise` keeps, in order: a run
    of non-space characters holding at least one letter, digit or mark (after NFKC, taken one
    character at a time)."""
    spans: list[tuple[int, int]] = []
    start, end, wordy = -1, -1, False
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch):
            if c in _SPACE or unicodedata.category(c)[0] == "Z":
                if wordy:
                    spans.append((start, end))
                start, wordy = -1, False
            else:
                start = i if start < 0 else start
                end = i + 1
                wordy = wordy or unicodedata.category(c)[0] in "LNM"
    if wordy:
        spans.append((start, end))
    return spans


def cut_windows(text: str, words: Sequence[int], n: int) -> list[str] | None:
    """The pieces of `text` kept once the n-grams starting at normalised word indices `words`
    are removed with their windows (None: the text is dropped whole). None too when the words
    found here do not line up with `normalise`'s (a character whose NFKC form differs alone
    and in context): dropping is the safe side."""
    spans = word_spans(text)
    expected = normalise([text]).to_pylist()[0]
    if len(spans) != len(expected.split()) or max(words) + n > len(spans):
        return None
    cuts = sorted(
        (max(0, spans[w][0] - WINDOW_CHARS), min(len(text), spans[w + n - 1][1] + WINDOW_CHARS))
        for w in words
    )
    merged: list[list[int]] = []
    for a, b in cuts:  # overlapping windows are one cut (a long copied passage is one gap)
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    bounds = [0] + [x for ab in merged for x in ab] + [len(text)]
    pieces = [text[bounds[i] : bounds[i + 1]].strip() for i in range(0, len(bounds), 2)]
    pieces = [p for p in pieces if p]
    if len(pieces) > MAX_PIECES:
        return None
    kept = [p for p in pieces if len(p) >= MIN_PIECE_CHARS]
    return kept or None


@dataclass
class Screened:
    """What decontamination does to a batch of texts (rows are positions in the batch)."""

    keep: np.ndarray  # bool per row
    cut: dict[int, str] = field(default_factory=dict)  # row -> its text with windows removed
    found: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)  # (row, examples)
    dropped: int = 0  # texts dropped whole
    spared: int = 0  # texts whose every shared n-gram is boilerplate: kept whole
    chars_removed: int = 0  # characters the cuts removed (window mode)


def screen(
    texts: pa.Array | Sequence[str],
    index: NgramIndex,
    mode: str = "document",
    ignore: set[int] | None = None,
) -> Screened:
    """Decide, per text, keep / cut / drop: hits on `ignore`d (boilerplate) n-gram hashes do
    not count; `mode` is `document` or `window` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"filter.decontaminate_mode must be one of {MODES}, got {mode!r}")
    # Only the matched texts become Python strings (a batch's texts stay in Arrow).
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    out = Screened(keep=np.ones(len(arr), dtype=bool))
    for m in index.find(arr):
        hits = [h for h in m.hits if not ignore or h.hash not in ignore]
        if not hits:
            out.spared += 1
            continue
        out.found.append((m.row, tuple(sorted({h.example for h in hits}))))
        text = arr[m.row].as_py() or ""
        pieces = (
            cut_windows(text, sorted({h.word for h in hits}), index.n) if mode == "window" else None
        )
        if pieces is None:
            out.keep[m.row] = False
            out.dropped += 1
        else:
            out.cut[m.row] = PIECE_JOIN.join(pieces)
            out.chars_removed += len(text) - sum(map(len, pieces))
    return out
