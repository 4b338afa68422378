"""Decontamination: find pre-training documents that share a long n-gram with an evaluation
example (GPT-3's contamination analysis: 13 words after normalisation).

Why this shape:
- The evaluation side is small (a few thousand dev and test examples), the corpus is not. So
  the evaluation n-grams are hashed once into a sorted array of 64-bit hashes (`NgramIndex`, a
  few MB) and the corpus is streamed past it in bounded chunks (`NgramIndex.find`): memory
  depends on the index and the chunk size, never on the corpus.
- Hashing is vectorised over a whole chunk of documents (numpy over the UTF-8 bytes of the
  normalised texts), because a per-word Python loop would dominate the filter stage at
  full-corpus scale.
- A 64-bit hash can collide, so every hit is confirmed on the text itself (the n-gram's words
  are looked up in the example's normalised text): what is reported and dropped is exact.
- This module takes plain texts (`EvalText`): reading a downstream task's examples is the
  fine-tuning layer's business, and the data layer must not depend on it.

Normalisation (`normalise`): Unicode NFKC form, lower case, every run of characters that are
neither letters, digits nor combining marks becomes one space, ends trimmed. Punctuation thus
separates words ("anti-inflammatory" is two words), so texts tokenised differently upstream
("anti - inflammatory") still match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_NGRAM = 13
# Text bytes hashed at once: bounds the scratch arrays (about 50 bytes per text byte, so about
# 50 MB; a longer single document is hashed alone).
CHUNK_BYTES = 1 << 20
INDEX_VERSION = 1

_U64 = np.uint64
_WORD_BASE = _U64(0x100000001B3)  # odd multipliers of the polynomial hashes
_GRAM_BASE = _U64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class EvalText:
    """One evaluation example as plain text: where it comes from and its words."""

    task: str
    split: str
    id: str
    texts: tuple[str, ...]  # e.g. (source, target): n-grams never span two of them


Texts = pa.Array | pa.ChunkedArray | Sequence[str | None]


def _as_array(texts: Texts) -> pa.Array:
    """One large_string array without nulls (nulls become empty strings)."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.fill_null(arr.cast(pa.large_string()), "")


def normalise(texts: Texts) -> pa.Array:
    """Lower-cased, punctuation-free, single-spaced texts (nulls become empty strings)."""
    arr = pc.utf8_lower(pc.utf8_normalize(_as_array(texts), "NFKC"))
    arr = pc.replace_substring_regex(arr, r"[^\pL\pN\pM]+", " ")
    return pc.utf8_trim_whitespace(arr)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial sums over all 64 bits."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, dtype=_U64)
    out[0] = 1
    if n > 1:
        out[1:] = base
        out = np.cumprod(out, dtype=_U64)
    return out


@dataclass
class _Grams:
    """The n-grams of a chunk of normalised texts: hash, text index and first word of each, and
    where every word lies in `data` (for confirming hits)."""

    hashes: np.ndarray  # uint64
    doc: np.ndarray  # int64: index of the text in the chunk
    word: np.ndarray  # int64: index of the n-gram's first word
    starts: np.ndarray  # byte offset of every word in `data`
    ends: np.ndarray  # byte offset just past every word
    data: np.ndarray  # uint8: the chunk's normalised UTF-8 bytes

    def text(self, i: int, n: int) -> str:
        """The words of the i-th n-gram, single-spaced."""
        k = int(self.word[i])
        return self.data[int(self.starts[k]) : int(self.ends[k + n - 1])].tobytes().decode()


def _words(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of every word (texts are single-spaced and trimmed)."""
    space = data == 0x20
    n = len(data)
    first = np.zeros(n, dtype=bool)
    last = np.zeros(n, dtype=bool)
    nonempty = offsets[1:] > offsets[:-1]
    first[offsets[:-1][nonempty]] = True
    last[offsets[1:][nonempty] - 1] = True
    first[1:] |= space[:-1]
    last[:-1] |= space[1:]
    first &= ~space
    last &= ~space
    return np.flatnonzero(first), np.flatnonzero(last) + 1


def _word_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every word's bytes (a polynomial over the bytes, then mixed)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=_U64)
    lengths = ends - starts
    is_start = np.zeros(len(data), dtype=np.int64)
    is_start[starts] = 1
    word_of_byte = np.cumsum(is_start) - 1
    pos = np.arange(len(data)) - starts[np.maximum(word_of_byte, 0)]
    inside = (data != 0x20) & (word_of_byte >= 0)
    table = _powers(_WORD_BASE, int(lengths.max()) + 1)
    contrib = (data.astype(_U64) + _U64(1)) * table[np.where(inside, pos, 0)]
    contrib[~inside] = 0
    return _mix(np.add.reduceat(contrib, starts) ^ lengths.astype(_U64))


def ngrams(norm: pa.Array, n: int) -> _Grams:
    """Every n-gram of consecutive words inside each text of `norm` (from `normalise`)."""
    buffers = norm.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[norm.offset : norm.offset + len(norm) + 1]
    base = int(offsets[0])
    whole = np.zeros(0, np.uint8) if buffers[2] is None else np.frombuffer(buffers[2], np.uint8)
    data = whole[base : int(offsets[-1])]
    offsets = offsets - base
    starts, ends = _words(data, offsets)
    empty = np.zeros(0, dtype=np.int64)
    m = len(starts) - n + 1
    if m <= 0:
        return _Grams(np.zeros(0, dtype=_U64), empty, empty, starts, ends, data)
    with np.errstate(over="ignore"):
        words = _word_hashes(data, starts, ends)
        acc = np.zeros(m, dtype=_U64)
        for t, p in enumerate(_powers(_GRAM_BASE, n)):
            acc += words[t : t + m] * p
        hashes = _mix(acc)
    doc_of_word = np.searchsorted(offsets[1:], starts, side="right")
    valid = doc_of_word[:m] == doc_of_word[n - 1 :]
    first = np.flatnonzero(valid)
    return _Grams(hashes[first], doc_of_word[first], first, starts, ends, data)


def _chunks(texts: pa.Array, max_bytes: int) -> Iterator[tuple[int, pa.Array]]:
    """Consecutive slices of `texts` of at most `max_bytes` each (a longer text alone)."""
    ends = np.cumsum(pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64))
    i, done = 0, 0
    while i < len(texts):
        j = max(i + 1, int(np.searchsorted(ends, done + max_bytes, side="right")))
        yield i, texts.slice(i, j - i)
        done, i = int(ends[j - 1]), j


def _ranks(width: np.ndarray) -> np.ndarray:
    """0, 1, ..., w-1 for every w in `width`, concatenated."""
    total = int(width.sum())
    return np.arange(total) - np.repeat(np.cumsum(width) - width, width)


@dataclass(frozen=True)
class Match:
    """A corpus text (by its position in the scanned batch) and the examples it shares an
    n-gram with (indices into `NgramIndex.examples`)."""

    row: int
    examples: tuple[int, ...]


class NgramIndex:
    """The hashed n-grams of the evaluation examples: sorted `hashes` with the example each
    comes from (`owners`, the same hash repeated when two examples share an n-gram)."""

    def __init__(
        self, n: int, examples: Sequence[EvalText], hashes: np.ndarray, owners: np.ndarray
    ):
        self.n = n
        self.examples = list(examples)
        self.hashes = hashes
        self.owners = owners
        self._padded: list[str] | None = None

    # -- building and storing -------------------------------------------------------------
    @classmethod
    def build(cls, examples: Sequence[EvalText], n: int = DEFAULT_NGRAM) -> NgramIndex:
        """Hash every n-gram of every example (examples shorter than n words add none)."""
        if n < 1:
            raise ValueError(f"n-gram length must be positive, got {n}")
        texts, owner_of_text = [], []
        for i, ex in enumerate(examples):
            texts += list(ex.texts)
            owner_of_text += [i] * len(ex.texts)
        grams = ngrams(normalise(texts), n) if texts else None
        if grams is None or len(grams.hashes) == 0:
            return cls(n, examples, np.zeros(0, _U64), np.zeros(0, np.int32))
        owners = np.asarray(owner_of_text, dtype=np.int32)[grams.doc]
        pairs = np.unique(np.stack([grams.hashes, owners.astype(_U64)], axis=1), axis=0)
        return cls(n, examples, pairs[:, 0].copy(), pairs[:, 1].astype(np.int32))

    def checked(self) -> np.ndarray:
        """Per example: whether it has at least one n-gram (a shorter one cannot be found)."""
        out = np.zeros(len(self.examples), dtype=bool)
        out[self.owners] = True
        return out

    def coverage(self) -> dict[str, dict[str, dict[str, int]]]:
        """Examples per task and split, and how many of them are long enough to be checked."""
        examples: dict[str, dict[str, int]] = {}
        checked: dict[str, dict[str, int]] = {}
        for e, ok in zip(self.examples, self.checked().tolist(), strict=True):
            examples.setdefault(e.task, {}).setdefault(e.split, 0)
            checked.setdefault(e.task, {}).setdefault(e.split, 0)
            examples[e.task][e.split] += 1
            checked[e.task][e.split] += int(ok)
        return {"examples": examples, "checked": checked}

    def digest(self) -> str:
        """What the scan depends on: n, the hashes, and the examples (ids and texts)."""
        h = hashlib.sha256(f"ngram-index/{INDEX_VERSION}/{self.n}".encode())
        h.update(self.hashes.tobytes())
        h.update(self.owners.tobytes())
        h.update(json.dumps([asdict(e) for e in self.examples], sort_keys=True).encode())
        return h.hexdigest()

    def save(self, folder: Path) -> None:
        """`ngrams.npz` (no pickles) and `examples.jsonl` in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "ngrams.npz", "wb") as f:
            np.savez(f, n=np.int64(self.n), hashes=self.hashes, owners=self.owners)
        with open(folder / "examples.jsonl", "w", encoding="utf-8") as f:
            for e in self.examples:
                f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: Path) -> NgramIndex:
        with np.load(folder / "ngrams.npz", allow_pickle=False) as z:
            n, hashes, owners = int(z["n"]), z["hashes"], z["owners"]
        with open(folder / "examples.jsonl", encoding="utf-8") as f:
            examples = [
                EvalText(**{**(d := json.loads(line)), "texts": tuple(d["texts"])}) for line in f
            ]
        return cls(n, examples, hashes, owners)

    # -- scanning -------------------------------------------------------------------------
    def _confirm(self, example: int, gram: str) -> bool:
        """Whether the n-gram's words really occur in the example (rules out hash collisions)."""
        if self._padded is None:
            flat = normalise([t for e in self.examples for t in e.texts]).to_pylist()
            self._padded, i = [], 0
            for e in self.examples:
                self._padded.append(" " + " ".join(flat[i : i + len(e.texts)]) + " ")
                i += len(e.texts)
        return f" {gram} " in self._padded[example]

    def _candidates(self, grams: _Grams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text, example, n-gram) of every hash hit, sorted by text then example."""
        lo = np.searchsorted(self.hashes, grams.hashes, side="left")
        hi = np.searchsorted(self.hashes, grams.hashes, side="right")
        width = hi - lo
        gram = np.repeat(np.arange(len(lo)), width)
        owner = self.owners[np.repeat(lo, width) + _ranks(width)]
        doc = grams.doc[gram]
        order = np.lexsort((gram, owner, doc))
        return doc[order], owner[order], gram[order]

    def _confirmed(self, grams: _Grams) -> dict[int, set[int]]:
        """Text -> the examples it shares an n-gram with, each pair confirmed on the words."""
        doc, owner, gram = self._candidates(grams)
        found: dict[int, set[int]] = {}
        done: tuple[int, int] | None = None
        for d, e, g in zip(doc.tolist(), owner.tolist(), gram.tolist(), strict=True):
            if (d, e) != done and self._confirm(e, grams.text(g, self.n)):
                found.setdefault(d, set()).add(e)
                done = (d, e)  # one confirmed n-gram per (text, example) is enough
        return found

    def find(self, texts: Texts, chunk_bytes: int = CHUNK_BYTES) -> list[Match]:
        """The texts sharing at least one n-gram with an example, in order; hashed in chunks
        of about `chunk_bytes` of text, so memory does not grow with the batch."""
        out: list[Match] = []
        if len(self.hashes) == 0:
            return out
        for first, chunk in _chunks(_as_array(texts), chunk_bytes):
            grams = ngrams(normalise(chunk), self.n)
            for row, examples in self._confirmed(grams).items():
                out.append(Match(first + row, tuple(sorted(examples))))
        return out


def summarise(
    examples: Sequence[EvalText], matches: Sequence[tuple[str, Sequence[int]]], max_docs: int = 5
) -> list[dict[str, object]]:
    """The evaluation examples found in the corpus, from (doc_id, example indices) matches:
    task, split, id, how many documents held it and the first `max_docs` of their doc_ids
    (bounded by the evaluation set, however many documents matched)."""
    docs: dict[int, list[str]] = {}
    count: dict[int, int] = {}
    for doc_id, found in matches:
        for e in found:
            count[e] = count.get(e, 0) + 1
            if len(held := docs.setdefault(e, [])) < max_docs:
                held.append(doc_id)
    rows = [
        {
            "task": examples[e].task,
            "split": examples[e].split,
            "id": examples[e].id,
            "documents": count[e],
            "doc_ids": docs[e],
        }
        for e in count
    ]
    return sorted(rows, key=lambda r: (r["task"], r["split"], r["id"]))
