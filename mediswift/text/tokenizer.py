"""The `Tokenizer` facade: Moses then BPE to encode, BPE then Moses detokenization to decode.

A tokenizer directory holds `bpe.model` (sentencepiece) and `tokenizer.json` (the Moses settings,
special ids, vocabulary size and the content hash). The vocab stage writes both into its artifact
directory; `Tokenizer.load(dir)` reads them back. The hash covers the model bytes and the Moses
settings, so later stages can key on it: a different vocabulary or pre-tokenization is a
different hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mediswift.artifacts import write_atomic
from mediswift.text import moses

MODEL_FILE = "bpe.model"
CONFIG_FILE = "tokenizer.json"
FORMAT_VERSION = 1


def document_text(title: str | None, text: str | None) -> str:
    """What is tokenized for a document: the title, a newline, the text (empty parts left out).

    Moses turns the newline into a plain space, so the title reads as the first words of the
    document; nothing marks the boundary beyond that (the title usually ends with a period).
    """
    return "\n".join(p for p in (title, text) if p)


def tokenizer_hash(model_bytes: bytes, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(model_bytes)
    return h.hexdigest()[:16]


def write_tokenizer_config(directory: Path) -> dict[str, Any]:
    """Write `tokenizer.json` next to a learned `bpe.model`; returns its content."""
    directory = Path(directory)
    model_bytes = (directory / MODEL_FILE).read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    settings = {"format_version": FORMAT_VERSION, "moses": moses.SETTINGS}
    config = {
        **settings,
        "model_file": MODEL_FILE,
        "vocab_size": sp.get_piece_size(),
        "special_ids": {
            "pad": sp.pad_id(),
            "unk": sp.unk_id(),
            "bos": sp.bos_id(),
            "eos": sp.eos_id(),
        },
        "hash": tokenizer_hash(model_bytes, settings),
    }
    write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


class Tokenizer:
    """Encode text to BPE ids and back, the way the vocabulary was learned."""

    def __init__(self, model_bytes: bytes, config: dict[str, Any], source: str = "<memory>"):
        if config.get("moses") != moses.SETTINGS:
            raise ValueError(
                f"{source}: tokenizer was learned with Moses settings {config.get('moses')}, "
                f"this code implements {moses.SETTINGS}"
            )
        settings = {"format_version": config.get("format_version"), "moses": config["moses"]}
        actual = tokenizer_hash(model_bytes, settings)
        if config.get("hash") != actual:
            raise ValueError(
                f"{source}: {MODEL_FILE} does not match {CONFIG_FILE} (hash {actual} != "
                f"{config.get('hash')}); the tokenizer files are corrupt or mixed"
            )
        self._model_bytes = model_bytes
        self.config = config
        # One encoding thread: parallelism comes from worker processes (sentencepiece's own
        # default, all cores per call, oversubscribes a pool of workers).
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes, num_threads=1)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load the tokenizer in directory `path` (a vocab artifact directory)."""
        path = Path(path)
        cfg_file, model_file = path / CONFIG_FILE, path / MODEL_FILE
        for f in (cfg_file, model_file):
            if not f.is_file():
                raise FileNotFoundError(f"{path}: no tokenizer here ({f.name} is missing)")
        try:
            config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_file}: not valid JSON: {e}") from e
        return cls(model_file.read_bytes(), config, source=str(path))

    # Pickling sends the model bytes, not the SWIG object (process pools, Dask workers).
    def __getstate__(self) -> dict[str, Any]:
        return {"model_bytes": self._model_bytes, "config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_bytes"], state["config"])

    @property
    def hash(self) -> str:
        return self.config["hash"]

    @cached_property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    @property
    def special_ids(self) -> dict[str, int]:
        return {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id, "unk": self.unk_id}

    def moses(self, text: str) -> str:
        return moses.moses_tokenize(text)

    def encode(self, text: str) -> list[int]:
        """Moses-tokenize, then BPE-encode (no BOS/EOS added)."""
        return self.sp.encode(moses.moses_tokenize(text), out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode([moses.moses_tokenize(t) for t in texts], out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """BPE-decode (special ids vanish), then Moses-detokenize."""
        return moses.moses_detokenize(self.sp.decode(list(map(int, ids))))

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


def unk_rate(tokenizer: Tokenizer, texts: Iterable[str], batch: int = 256) -> tuple[float, int]:
    """Share of BPE tokens that are `<unk>` over `texts`, and the token count it is over."""
    unk = total = 0
    chunk: list[str] = []

    def count() -> None:
        nonlocal unk, total
        for ids in tokenizer.encode_batch(chunk):
            total += len(ids)
            unk += sum(1 for i in ids if i == tokenizer.unk_id)
        chunk.clear()

    for t in texts:
        chunk.append(t)
        if len(chunk) >= batch:
            count()
    count()
    return (unk / total if total else 0.0), total
