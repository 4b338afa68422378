"""The `mediswift-plan` flow: a recipe's dry run as a Prefect run (the `plan` deployment).

It prints and publishes (as a Markdown artifact) what `mediswift run --dry-run` prints: every
stage's key and state in the home, each variant's training FLOPs, the fine-tuning grid, and the
accelerator-hours, disk and download estimates. It runs nothing.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import registry
from flows.pipeline import RecipeName
from mediswift.config import home_dir, load_recipe
from mediswift.dry_run import dry_run
from mediswift.overrides import Overrides


@flow(name="mediswift-plan", log_prints=True)
def mediswift_plan(
    recipe: RecipeName = "demo",
    overrides: Overrides | None = None,
    home: str | None = None,
    mirror: str | None = None,
    gpu: Literal["a100", "h100"] = "h100",
    mfu: float = 0.4,
) -> str:
    """Plan a recipe: keys, FLOPs, grid, GPU-hours at `mfu` on `gpu`, disk and download.

    Args:
        recipe: a recipe of deployments/recipes.
        overrides: settings that replace the recipe's.
        home: the artifact root whose stage states are shown.
        mirror: a local folder or URL standing for upstream.
        gpu: the GPU the hours are estimated for (bf16 peak of its data sheet).
        mfu: the model FLOPs utilisation assumed.
    """
    root = home_dir(home)
    cfg = load_recipe(recipe, (overrides or Overrides()).as_recipe_fragment(), mirror, root)
    text = dry_run(cfg, root, registry.plan(cfg, root), registry.stage_names(), gpu, mfu)
    print(text)
    create_markdown_artifact(key="mediswift-plan", markdown=f"```\n{text}\n```")
    return text
