"""Tokenize task: one document shard -> its token shards (one per split), as a cached unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import unit_at
from mediswift.text.token_shards import tokenize_unit


@task(name="tokenize-shard", task_run_name="tokenize-{name}")
def tokenize_shard(
    key: str, home: str, name: str, doc_shard: str, tokenizer_dir: str
) -> dict[str, Any]:
    """Encode `doc_shard` with the tokenizer in `tokenizer_dir` into the unit `key`."""
    root = Path(home)
    unit = unit_at(root, "tokenize", key)
    return tokenize_unit(Path(doc_shard), Path(tokenizer_dir), unit, root)
