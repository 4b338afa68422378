"""The names of variants and models, one scheme wherever they appear: tables, dry run,
estimates, MLflow runs and registry, exports. Torch-free, so the dry run can name them."""

from __future__ import annotations


def variant_name(model: str, sparsity: float, method: str = "static") -> str:
    """tiny-dense, tiny-s50, xl-s75; dynamic methods append theirs (tiny-s75-rigl)."""
    if sparsity == 0:
        return f"{model}-dense"
    base = f"{model}-s{round(sparsity * 100)}"
    return base if method == "static" else f"{base}-{method}"


def iso_flops_name(model: str, sparsity: float) -> str:
    """The dense baseline at the training FLOPs of `model` at `sparsity`: tiny-dense-iso75."""
    return f"{model}-dense-iso{round(sparsity * 100)}"


def model_name(variant: str, task: str | None = None) -> str:
    """The name of a variant's model, or of its fine-tuned point on `task`, wherever a model is
    named (registered model, export card): `mediswift-tiny-dense`, `mediswift-tiny-s75-hoc`.
    The prefix keeps the names apart from other models in a shared registry."""
    return f"mediswift-{variant}-{task}" if task else f"mediswift-{variant}"


def seeded_name(variant: str, seed: int) -> str:
    """One pre-training seed of a variant the recipe trains with several: tiny-s50-seed1."""
    return f"{variant}-seed{seed}"


def arm_of(variant: str) -> str:
    """The variant's name without its seed (`seeded_name`): tiny-s50-seed1 -> tiny-s50."""
    base, sep, seed = variant.rpartition("-seed")
    return base if sep and seed.isdigit() else variant
