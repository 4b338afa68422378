"""Weight sparsity kept outside the model: static random masks (the paper) and dynamic SET/RigL.

`METHODS` maps a `pretrain.sparsity_method` name to the builder of its mask-update rule (None:
the masks never change). A rule has `due(step)`, `update(step, optimizer)` and
`state_dict()` / `load_state_dict()` (checkpointed as the `dynamic` part); see `dynamic.py`.
"""

from collections.abc import Callable
from typing import Any

from mediswift.sparsity.dynamic import DynamicSparsity, drop_fraction
from mediswift.sparsity.masks import (
    MaskCounts,
    MaskedParams,
    count_active,
    make_masks,
    random_mask,
)


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
}

__all__ = [
    "METHODS",
    "DynamicSparsity",
    "MaskCounts",
    "MaskedParams",
    "count_active",
    "drop_fraction",
    "make_masks",
    "random_mask",
]
