"""The MediSwift model: pure architecture, no training or sparsity logic.

`mediswift.model.sizes` is plain data (no torch), so validating a recipe stays light; the
architecture (`gpt`, which loads torch) is imported on first use of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

from mediswift.model.sizes import PAPER_NON_EMBEDDING_PARAMS, SIZES

_LAZY = {"BLOCK_MATRICES": "gpt", "GPT": "gpt", "GPTConfig": "gpt", "model_config": "gpt"}

__all__ = ["PAPER_NON_EMBEDDING_PARAMS", "SIZES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"mediswift.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
