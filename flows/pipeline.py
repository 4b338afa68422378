"""The `mediswift` flow: runs any subset of the stages, in order, from a recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows import registry
from flows.executor import run_stage_on
from flows.report import publish_report
from flows.server import tie_temporary_server_to_this_process

__all__ = ["mediswift", "run_stage", "tie_temporary_server_to_this_process"]
from mediswift.artifacts import content_key, sweep_stale_tmp
from mediswift.config import RECIPES_DIR, PipelineConfig, home_dir, load_recipe, recipe_settings
from mediswift.graph import listing_digest, reopen
from mediswift.interrupt import stop_on_signals
from mediswift.lock import home_lock
from mediswift.overrides import Overrides
from mediswift.recipe_names import claim_name
from mediswift.sources import describe, remember
from tasks.tracking import use_home_store

RECIPE_NAMES = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
# The form shows the stages as choices (from the registry: names are written there only).
Stage = Literal[tuple(registry.stage_names())]  # type: ignore[valid-type]
# The form shows the known recipes as choices; the command line also takes a YAML path.
RecipeName = Annotated[
    str,
    Field(
        description=f"recipe name ({', '.join(RECIPE_NAMES)}) or a YAML path",
        json_schema_extra={"examples": RECIPE_NAMES},
    ),
]


def run_stage(name: str, cfg: PipelineConfig, home: Path, arts: dict[str, Any]) -> bool:
    """Run one stage through its flow (`flows.registry`) unless its output is done.

    Returns whether the stage ran."""
    logger = get_run_logger()
    stage = registry.by_name(name)
    out = arts[name]
    inputs = {s: arts[s] for s in stage.define.inputs}
    for i, art in inputs.items():
        if not art.done():
            raise RuntimeError(
                f"stage '{name}' needs the output of '{i}' for this recipe ({art.path}), "
                f"which is not complete: run the '{i}' stage first"
            )
    if out.done():
        logger.info("%s: already done (%s), nothing to do", name, out.path)
        return False
    # Temp files of writers killed in an earlier run of this stage (the home is ours: locked).
    swept = sweep_stale_tmp(home / name)
    if swept:
        logger.info("%s: removed %d temporary file(s) of dead writers", name, len(swept))
    logger.info("%s: running into %s", name, out.path)
    run_stage_on(cfg, stage, lambda: stage.run(cfg, home, out, inputs))
    if not out.done():
        raise RuntimeError(f"stage '{name}' returned without writing {out.manifest_path}")
    return True


def run_name() -> str:
    """`<recipe>-<stages>-<key>`: what a run is, readable in the Prefect UI's run list."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    recipe = Path(str(p.get("recipe") or "demo")).stem
    chosen = registry.parse_stages(p.get("stages") or None)
    what = "all" if chosen == registry.stage_names() else "+".join(chosen)
    fragment = Overrides.model_validate(p.get("overrides") or {}).as_recipe_fragment()
    key = content_key(recipe, chosen, fragment, p.get("force") or [], length=6)
    return f"{recipe}-{what}-{key}"


def upstream_listing(cfg: PipelineConfig) -> str | None:
    """The digest of the PubMed files upstream lists now, when the recipe tracks upstream."""
    if not cfg.download.track_upstream:
        return None
    from tasks.download import list_pubmed_files

    files = list_pubmed_files(cfg.download, cfg.resolve(cfg.download.pubmed_url))
    get_run_logger().info("upstream lists %d PubMed files", len(files))
    return listing_digest(files)


def force_stages(home: Path, arts: dict[str, Any], stages: list[str]) -> None:
    """Make the named stages run again, every unit of them (`mediswift.graph.reopen`)."""
    for stage in stages:
        n = reopen(home, arts[stage])
        get_run_logger().warning(
            "%s: forced: its output and %d unit(s) will be made again", stage, n
        )


def run_stages(
    chosen: list[str], cfg: PipelineConfig, home: Path, arts: dict[str, Any]
) -> list[str]:
    """Run the `chosen` stages in order; returns those that ran.

    The home remembers the source (later commands find its outputs with it) only once it
    worked: a stage made its output with it, or every stage succeeded. A failed try with a
    wrong source leaves the one the home's outputs were made from."""
    ran = []
    for stage in chosen:
        if run_stage(stage, cfg, home, arts):
            ran.append(stage)
            remember(home, cfg.name, cfg.mirror)
    remember(home, cfg.name, cfg.mirror)
    return ran


@flow(name="mediswift", log_prints=True, flow_run_name=run_name)
def mediswift(
    recipe: RecipeName = "demo",
    stages: list[Stage] | None = None,
    overrides: Overrides | None = None,
    home: str | None = None,
    mirror: str | None = None,
    force: list[Stage] | None = None,
) -> dict[str, str]:
    """Run the selected stages (all when empty) of a recipe, then refresh the report.

    Args:
        recipe: a recipe of deployments/recipes (its settings: docs/settings.md and the recipe
            file), or a YAML path when run from the command line.
        stages: the stages to run, in pipeline order; each reads the outputs of earlier ones.
            Empty: every stage.
        overrides: settings that replace the recipe's (empty fields keep the recipe's values).
        home: the artifact root (default: MEDISWIFT_HOME or ./.mediswift).
        mirror: a local folder or URL standing for the upstream servers, or "none" for
            upstream (default: MEDISWIFT_MIRROR, then the source this recipe last ran with in
            the home, then the recipe's `mirror`).
        force: stages to run again in full even though their outputs are done.
    """
    fragment = (overrides or Overrides()).as_recipe_fragment()
    root = home_dir(home)
    cfg = load_recipe(recipe, fragment, mirror, root)
    arts = registry.plan(cfg, root, upstream_listing(cfg))
    # One writer per home: a second run waits here, then finds the stages it shares done.
    # SIGINT/SIGTERM (a cancel from the UI too) stop the work within seconds, keeping what is done.
    with stop_on_signals(), home_lock(root, on_wait=get_run_logger().warning):
        use_home_store(cfg, root)
        claim_name(root, cfg.name, *recipe_settings(recipe))
        get_run_logger().info("source: %s", describe(cfg.mirror))
        force_stages(root, arts, registry.parse_stages(list(force)) if force else [])
        ran = run_stages(registry.parse_stages(list(stages) if stages else None), cfg, root, arts)
        report = publish_report(cfg, root, arts, log_to_mlflow=bool(ran), fragment=fragment)
    return {
        **{s: str(a.path) for s, a in arts.items() if a.done()},
        **({"report": str(report)} if report else {}),
    }
