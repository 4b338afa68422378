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

Normalisation (`normalise`) follows GPT-3 (Brown et al. 2020, Appendix C: "a gram is a
lowercase, whitespace delimited word with no punctuation"): Unicode NFKC form, lower case,
every character that is neither a letter, a digit, a combining mark nor white space deleted,
then the text split on white space. Punctuation thus joins, it does not separate:
"anti-inflammatory" is one word ("antiinflammatory"), as are "IL-6" ("il6") and "2.5" ("25"),
and a text tokenised differently upstream ("anti - inflammatory") is two words, as GPT-3 would
have it. White space is Unicode's (separators, and the ASCII controls tab to carriage return,
file to unit separator and NEL, as Python's `str.split` has it), so `word_spans` can find the
same words in the original text.
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
# 2: GPT-3's words (punctuation deleted, not a separator); hits keep every confirmed n-gram.
INDEX_VERSION = 2

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


# White space as `str.split` sees it (RE2's \s alone lacks \v, the separators and NEL), and
# the same less the plain space (so single spaces, most of them, are not rewritten).
_SPACE = r"\pZ\t\n\x0b\x0c\r\x1c-\x1f\x{85}"
_OTHER_SPACE = (
    r"\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
    r"\t\n\x0b\x0c\r\x1c-\x1f\x{85}"
)


def normalise(texts: Texts) -> pa.Array:
    """Lower-cased texts without punctuation, their words single-spaced (nulls become empty
    strings): GPT-3's words, see the module docstring."""
    arr = pc.utf8_lower(pc.utf8_normalize(_as_array(texts), "NFKC"))
    arr = pc.replace_substring_regex(arr, rf"[^\pL\pN\pM{_SPACE}]+", "")
    arr = pc.replace_substring_regex(arr, rf"[{_SPACE}]{{2,}}|[{_OTHER_SPACE}]", " ")
    return pc.utf8_trim(arr, " ")


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
    first_word: np.ndarray  # int64 per text: index of its first word (of the next text's if none)

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
    doc_of_word = np.searchsorted(offsets[1:], starts, side="right")
    first_word = np.searchsorted(doc_of_word, np.arange(len(offsets) - 1), side="left")
    m = len(starts) - n + 1
    if m <= 0:
        return _Grams(np.zeros(0, dtype=_U64), empty, empty, starts, ends, data, first_word)
    with np.errstate(over="ignore"):
        words = _word_hashes(data, starts, ends)
        acc = np.zeros(m, dtype=_U64)
        for t, p in enumerate(_powers(_GRAM_BASE, n)):
            acc += words[t : t + m] * p
        hashes = _mix(acc)
    valid = doc_of_word[:m] == doc_of_word[n - 1 :]
    first = np.flatnonzero(valid)
    return _Grams(hashes[first], doc_of_word[first], first, starts, ends, data, first_word)


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
class Hit:
    """One confirmed n-gram of a corpus text: where it starts (word index in the text's
    normalised words), its hash, and an example holding it (one hit per example)."""

    word: int
    hash: int
    example: int


@dataclass(frozen=True)
class Match:
    """A corpus text (by its position in the scanned batch), the examples it shares an n-gram
    with (indices into `NgramIndex.examples`) and every confirmed n-gram occurrence (`hits`,
    what the boilerplate guard counts and the window cut removes)."""

    row: int
    examples: tuple[int, ...]
    hits: tuple[Hit, ...] = ()


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

    def _confirmed(self, grams: _Grams) -> dict[int, list[Hit]]:
        """Text -> every confirmed (n-gram occurrence, example) of it, in word order."""
        doc, owner, gram = self._candidates(grams)
        found: dict[int, list[Hit]] = {}
        confirmed: dict[tuple[str, int], bool] = {}  # (n-gram's words, example) -> found
        hashes = grams.hashes[gram].tolist()
        for d, e, g, h in zip(doc.tolist(), owner.tolist(), gram.tolist(), hashes, strict=True):
            words = grams.text(g, self.n)
            if (ok := confirmed.get((words, e))) is None:
                ok = confirmed[(words, e)] = self._confirm(e, words)
            if ok:
                word = int(grams.word[g] - grams.first_word[d])
                found.setdefault(d, []).append(Hit(word, h, e))
        return {d: sorted(hits, key=lambda x: (x.word, x.example)) for d, hits in found.items()}

    def find(self, texts: Texts, chunk_bytes: int = CHUNK_BYTES) -> list[Match]:
        """The texts sharing at least one n-gram with an example, in order; hashed in chunks
        of about `chunk_bytes` of text, so memory does not grow with the batch."""
        out: list[Match] = []
        if len(self.hashes) == 0:
            return out
        for first, chunk in _chunks(_as_array(texts), chunk_bytes):
            grams = ngrams(normalise(chunk), self.n)
            for row, hits in sorted(self._confirmed(grams).items()):
                examples = tuple(sorted({h.example for h in hits}))
                out.append(Match(first + row, examples, tuple(hits)))
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
