"""Weight sparsity kept outside the model: static random masks (the paper) and dynamic SET/RigL."""

from mediswift.sparsity.dynamic import DynamicSparsity, drop_fraction
from mediswift.sparsity.masks import (
    MaskCounts,
    MaskedParams,
    count_active,
    make_masks,
    random_mask,
)

__all__ = [
    "DynamicSparsity",
    "MaskCounts",
    "MaskedParams",
    "count_active",
    "drop_fraction",
    "make_masks",
    "random_mask",
]
