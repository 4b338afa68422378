"""Typed overrides of a recipe: the flow's parameter form in the Prefect UI.

The common knobs are typed fields (the UI renders them as inputs); anything else goes in
`extra`, a nested recipe fragment such as `{"pretrain": {"lr": 1e-4}}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mediswift.config import PretrainConfig, deep_merge
from mediswift.model.sizes import SIZES

# The choices come from where they are defined: the sizes table and the pretrain section.
SizeName = Literal[tuple(SIZES)]  # type: ignore[valid-type]
SparsityMethod = PretrainConfig.model_fields["sparsity_method"].annotation

# Typed field -> (section, key) in the recipe.
_PATHS: dict[str, tuple[str, str]] = {
    "pubmed_max_files": ("download", "pubmed_max_files"),
    "pmc_max_articles": ("download", "pmc_max_articles"),
    "vocab_size": ("vocab", "vocab_size"),
    "model": ("pretrain", "model"),
    "pretrain_steps": ("pretrain", "steps"),
    "sparsity_levels": ("pretrain", "sparsity_levels"),
    "sparsity_method": ("pretrain", "sparsity_method"),
    "finetune_tasks": ("finetune", "tasks"),
    "finetune_seeds": ("finetune", "seeds"),
}


class Overrides(BaseModel):
    """Settings that replace the recipe's; leave a field empty to keep the recipe's value."""

    pubmed_max_files: int | None = Field(None, ge=0, description="PubMed baseline files to take")
    pmc_max_articles: int | None = Field(None, ge=0, description="PMC articles to take")
    vocab_size: int | None = Field(None, gt=0, description="BPE vocabulary size")
    model: SizeName | None = Field(  # type: ignore[valid-type]
        None, description="model size (Table 5: med, large, xl; tiny and small for CPUs)"
    )
    pretrain_steps: int | None = Field(None, gt=0, description="pre-training steps")
    sparsity_levels: list[float] | None = Field(None, description="e.g. [0, 0.5, 0.75]")
    sparsity_method: SparsityMethod | None = Field(  # type: ignore[valid-type]
        None, description=PretrainConfig.model_fields["sparsity_method"].description
    )
    finetune_tasks: list[str] | None = Field(
        None,
        description="downstream tasks to run (pubmedqa, hoc, bc5cdr, ddi, ...), each "
        "with the recipe's settings for it",
    )
    finetune_seeds: list[int] | None = Field(None, description="fine-tuning seeds")
    extra: dict[str, Any] = Field(
        default_factory=dict, description='nested recipe fragment, e.g. {"pretrain": {"lr": 1e-4}}'
    )

    def as_recipe_fragment(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (section, key) in _PATHS.items():
            value = getattr(self, name)
            if value is not None:
                out.setdefault(section, {})[key] = value
        return deep_merge(out, self.extra)


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set pretrain.steps=100` style assignments (values parsed as YAML) -> nested dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        node = out
        *parents, leaf = path.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: i + 1])
                raise ValueError(f"--set {path}: {where} was set to a value, not a section")
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"--set {path}: {path} is a section; set its keys ({path}.<key>=...)")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({e})") from e
    return out
