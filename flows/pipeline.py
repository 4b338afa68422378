"""The `mediswift` flow: runs any subset of the stages, in order, from a recipe."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.report import publish_report
from flows.server import tie_temporary_server_to_this_process

__all__ = ["mediswift", "run_stage", "tie_temporary_server_to_this_process"]
from mediswift.config import PipelineConfig, home_dir, load_recipe
from mediswift.lock import home_lock
from mediswift.overrides import Overrides
from mediswift.plan import STAGE_INPUTS, parse_stages, plan

Stage = Literal[
    "download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune", "evaluate"
]


def run_stage(stage: str, cfg: PipelineConfig, home: Path, arts: dict[str, Any]) -> bool:
    """Run one stage through its module `flows.stages.<stage>` unless its output is done.

    Returns whether the stage ran."""
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
        return False
    module = importlib.import_module(f"flows.stages.{stage}")
    logger.info("%s: running into %s", stage, out.path)
    module.run(cfg, home, out, inputs)
    if not out.done():
        raise RuntimeError(f"stage '{stage}' returned without writing {out.manifest_path}")
    return True


@flow(name="mediswift", log_prints=True)
def mediswift(
    recipe: str = "demo",
    stages: list[Stage] | None = None,
    overrides: Overrides | None = None,
    home: str | None = None,
    mirror: str | None = None,
) -> dict[str, str]:
    """Run the selected stages (all when empty) of a recipe, then refresh the report.

    Args:
        recipe: a recipe name from deployments/recipes (demo, paper-med, ...) or a YAML path.
        stages: the stages to run, in pipeline order; each reads the outputs of earlier ones.
        overrides: settings that replace the recipe's.
        home: the artifact root (default: MEDISWIFT_HOME or ./.mediswift).
        mirror: a local folder or URL standing for the upstream servers (or MEDISWIFT_MIRROR).
    """
    fragment = (overrides or Overrides()).as_recipe_fragment()
    cfg = load_recipe(recipe, fragment, mirror)
    root = home_dir(home)
    arts = plan(cfg, root)
    # One writer per home: a second run waits here, then finds the stages it shares done.
    with home_lock(root, on_wait=get_run_logger().warning):
        ran = [
            s
            for s in parse_stages(list(stages) if stages else None)
            if run_stage(s, cfg, root, arts)
        ]
        report = publish_report(cfg, root, arts, log_to_mlflow=bool(ran))
    return {
        **{s: str(a.path) for s, a in arts.items() if a.done()},
        **({"report": str(report)} if report else {}),
    }
