"""Weight sparsity kept outside the model: static random masks (the paper), dynamic SET/RigL,
and static 2:4 semi-structured masks (the pattern GPU sparse tensor cores run).

`METHODS` maps a `pretrain.sparsity_method` name to the builder of its mask-update rule (None:
the masks never change). A rule has `due(step)`, `update(step, optimizer)` and
`state_dict()` / `load_state_dict()` (checkpointed as the `dynamic` part); see `dynamic.py`.
`PATTERNS` maps the methods whose masks have a structure to the function drawing them, and
`FIXED_LEVELS` those methods to the one sparsity their structure has.
"""

from collections.abc import Callable
from typing import Any

from mediswift.sparsity.dynamic import DynamicSparsity, drop_fraction
from mediswift.sparsity.masks import (
    MaskCounts,
    MaskedParams,
    MaskPattern,
    count_active,
    make_masks,
    random_mask,
)
from mediswift.sparsity.semi24 import SPARSITY as SEMI24_SPARSITY
from mediswift.sparsity.semi24 import Semi24Kernels, is_semi24, semi24_mask, use_semi24_kernels


def _dynamic(method: str) -> Callable[..., DynamicSparsity]:
    def build(masked: MaskedParams, cfg: Any) -> DynamicSparsity:
        return DynamicSparsity(
            masked,
            method,  # type: ignore[arg-type]
            cfg.steps,
            cfg.sparsity_update_every,
            cfg.sparsity_drop_fraction,
            cfg.sparsity_stop_fraction,
            seed=cfg.seed,
        )

    return build


# name -> builder(masked params, pretrain settings) of the mask-update rule, or None (static).
METHODS: dict[str, Callable[[MaskedParams, Any], Any] | None] = {
    "static": None,
    "set": _dynamic("set"),
    "rigl": _dynamic("rigl"),
    "semi24": None,
}

# name -> the mask pattern of structured methods (others draw `random_mask`).
PATTERNS: dict[str, MaskPattern] = {"semi24": semi24_mask}

# name -> the only sparsity level a structured method has.
FIXED_LEVELS: dict[str, float] = {"semi24": SEMI24_SPARSITY}

__all__ = [
    "FIXED_LEVELS",
    "METHODS",
    "PATTERNS",
    "DynamicSparsity",
    "MaskCounts",
    "MaskPattern",
    "MaskedParams",
    "Semi24Kernels",
    "count_active",
    "drop_fraction",
    "is_semi24",
    "make_masks",
    "random_mask",
    "semi24_mask",
    "use_semi24_kernels",
]
