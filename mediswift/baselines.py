"""The iso-FLOPs dense baselines a recipe asks for (`pretrain.iso_flops_baselines`): for each
sparse level, a dense model of the same size trained for as many steps as make the sparse
variant's training FLOPs, with its own full schedule. Torch-free: the dry run lists them."""

from __future__ import annotations

from mediswift.flops import iso_flops_steps
from mediswift.settings import PretrainConfig


def iso_flops_baselines(pc: PretrainConfig, size: str, vocab: int) -> list[tuple[float, int]]:
    """(sparse level, steps) of each iso-FLOPs dense baseline of `size` the recipe asks for."""
    if not pc.iso_flops_baselines:
        return []
    return [
        (s, iso_flops_steps(size, s, pc.steps, vocab, pc.seq_len))
        for s in pc.sparsity_levels
        if s > 0
    ]
