"""The variants a recipe pre-trains, torch-free so the dry run and the estimates list them:
every size at each of its sparsity levels (or the recipe's `pretrain.arms`), once per seed, and
the iso-FLOPs dense baselines it asks for (`pretrain.iso_flops_baselines`): for each sparse
level, a dense model of the same size trained for as many steps as make the sparse variant's
training FLOPs, with its own full schedule."""

from __future__ import annotations

from dataclasses import dataclass

from mediswift.flops import iso_flops_steps
from mediswift.names import iso_flops_name, seeded_name, variant_name
from mediswift.sections import PretrainConfig


@dataclass(frozen=True)
class PlannedVariant:
    """One pre-training run the recipe asks for."""

    name: str  # tiny-s50, tiny-s50-seed1, tiny-dense-iso75
    arm: str  # the name without its seed: the seeds of one arm share it
    model: str
    sparsity: float
    seed: int
    steps: int
    iso_flops_of: float | None = None  # a dense baseline at this sparse level's FLOPs

    lr: float | None = None  # the arm's own peak rate (None: the recipe's)

    def config(self, pc: PretrainConfig) -> PretrainConfig:
        """The settings this variant trains with (the recipe's, at its size, seed, steps and
        rate): without arms or seeds they equal `pc.for_size(model)`, so existing keys stay.
        What plans the other variants (the levels, arms, seeds) is narrowed to this one: a
        variant's spec holds its own level only."""
        update = {"model": self.model, "seed": self.seed, "steps": self.steps,
                  "sparsity_levels": [self.sparsity], "arms": None, "seeds": None}  # fmt: skip
        return pc.model_copy(update=update | ({"lr": self.lr} if self.lr is not None else {}))


def iso_flops_baselines(pc: PretrainConfig, size: str, vocab: int) -> list[tuple[float, int]]:
    """(sparse level, steps) of each iso-FLOPs dense baseline of `size` the recipe asks for."""
    if not pc.iso_flops_baselines:
        return []
    return [
        (s, iso_flops_steps(size, s, pc.steps, vocab, pc.seq_len)) for s in pc.levels(size) if s > 0
    ]


def planned_variants(pc: PretrainConfig, vocab: int) -> list[PlannedVariant]:
    """Every variant of the recipe, size by size: its arms once per seed, then its baselines."""

    def runs(arm: str, size: str, s: float, steps: int, iso: float | None) -> list[PlannedVariant]:
        level = iso if iso is not None else s
        seeds, lr = pc.seeds_of(size, level), pc.lr_of(size, level)
        return [
            PlannedVariant(
                seeded_name(arm, seed) if seeds else arm,
                arm,
                size,
                s,
                seed,
                steps,
                iso,
                lr if lr != pc.lr else None,
            )  # fmt: skip
            for seed in seeds or [pc.seed]
        ]

    out = []
    for size in pc.sizes:
        for s in pc.levels(size):
            out += runs(variant_name(size, s, pc.sparsity_method), size, s, pc.steps, None)
        for s, steps in iso_flops_baselines(pc, size, vocab):
            out += runs(iso_flops_name(size, s), size, 0.0, steps, s)
    return out
