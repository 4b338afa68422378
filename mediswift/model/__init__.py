"""The MediSwift model: pure architecture, no training or sparsity logic."""

from mediswift.model.gpt import BLOCK_MATRICES, GPT, GPTConfig, model_config
from mediswift.model.sizes import PAPER_NON_EMBEDDING_PARAMS, SIZES

__all__ = [
    "BLOCK_MATRICES",
    "GPT",
    "GPTConfig",
    "PAPER_NON_EMBEDDING_PARAMS",
    "SIZES",
    "model_config",
]
