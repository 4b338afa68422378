"""The tokenize stage: one unit per document shard (shard x tokenizer), fanned out by the
orchestrator; the manifest lists the token shards with their split and totals per split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from mediswift.manifests import TokenizeManifest, TokenShard, VocabManifest
from mediswift.stage_def import StageDef
from mediswift.stages.vocab import doc_shard_paths
from mediswift.text.token_shards import SPLITS, tokenize_unit
from mediswift.units import MANIFEST_ADDS, UnitResult, UnitSpec, unkeyed

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("tokenize", inputs=("filter", "vocab"), manifest=TokenizeManifest, version=3)

log = logging.getLogger(__name__)


class TokenizeSpec(UnitSpec):
    stage: ClassVar[str] = "tokenize"
    kind: ClassVar[str] = "shard"
    # 2: keys are the unit specs (the shard's path names its content).
    version: ClassVar[int] = 2

    doc_shard: str  # under home, inside a content-keyed filter unit
    tokenizer_hash: str
    tokenizer_dir: str = unkeyed("", "the vocab output under home (its hash is keyed)")
    name: str = unkeyed("", "the unit's run name in the UI")


def units(
    home: Path, filter_manifest: Any, vocab_dir: Path, vocab: VocabManifest
) -> list[TokenizeSpec]:
    """One unit per document shard of the filter output, in manifest order. The position in
    the manifest keeps names unique even when every shard has the same file name."""
    return [
        TokenizeSpec(
            doc_shard=str(shard.relative_to(home)),
            tokenizer_hash=vocab.hash,
            tokenizer_dir=str(vocab_dir.relative_to(home)),
            name=f"{i:04d}-{shard.stem}",
        )
        for i, shard in enumerate(doc_shard_paths(home, filter_manifest))
    ]


class TokenizeResult(UnitResult):
    input: str  # the document shard (relative to home)
    tokenizer_hash: str
    vocab_size: int
    shards: list[TokenShard]  # one per split with documents


TokenizeSpec.Result = TokenizeResult


def run_unit(spec: TokenizeSpec, home: Path) -> TokenizeResult:
    """Encode the document shard into the unit (one token shard per split)."""
    art = spec.artifact(home)
    made = tokenize_unit(home / spec.doc_shard, home / spec.tokenizer_dir, art, home)
    return TokenizeResult.model_validate({k: v for k, v in made.items() if k not in MANIFEST_ADDS})


def collect(
    vocab: VocabManifest,
    results: list[TokenizeResult],
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> TokenizeManifest:
    for r in results:
        if r.tokenizer_hash != vocab.hash:
            raise RuntimeError(f"unit for {r.input} was made with another tokenizer")
    shards = [s for r in results for s in r.shards]
    tokens = {s: sum(x.n_tokens for x in shards if x.split == s) for s in SPLITS}
    docs = {s: sum(x.n_docs for x in shards if x.split == s) for s in SPLITS}
    logger.info("tokenize: %s tokens in %s documents", tokens, docs)
    return TokenizeManifest(
        shards=shards,
        tokens=tokens,
        docs=docs,
        tokenizer_hash=vocab.hash,
        vocab_size=vocab.vocab_size,
    )
