"""The `mediswift` flow: runs any subset of the stages, in order, from a recipe."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from mediswift.config import home_dir, load_recipe
from mediswift.plan import STAGE_INPUTS, parse_stages, plan


def run_stage(stage: str, cfg: Any, home: Path, arts: dict[str, Any]) -> dict[str, Any]:
    """Run one stage through its module `flows.stages.<stage>` unless its output is done."""
    logger = get_run_logger()
    out = arts[stage]
    inputs = {s: arts[s] for s in STAGE_INPUTS[stage]}
    for name, art in inputs.items():
        if not art.done():
            raise RuntimeError(
                f"stage '{stage}' needs the output of '{name}' for this recipe ({art.path}), "
                f"which is not complete: run the '{name}' stage first"
            )
    if out.done():
        logger.info("%s: already done (%s), nothing to do", stage, out.path)
        return out.manifest()
    module = importlib.import_module(f"flows.stages.{stage}")
    logger.info("%s: running into %s", stage, out.path)
    manifest = module.run(cfg, home, out, inputs)
    if not out.done():
        raise RuntimeError(f"stage '{stage}' returned without writing {out.manifest_path}")
    return manifest


@flow(name="mediswift", log_prints=True)
def mediswift(
    recipe: str = "demo",
    stages: list[str] | None = None,
    home: str | None = None,
    mirror: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Run the selected stages (all by default) of a recipe; returns each stage's output path."""
    cfg = load_recipe(recipe, overrides, mirror)
    root = home_dir(home)
    arts = plan(cfg, root)
    done: dict[str, str] = {}
    for stage in parse_stages(stages):
        run_stage(stage, cfg, root, arts)
        done[stage] = str(arts[stage].path)
    return done
