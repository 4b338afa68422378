"""A pipeline stage as the library knows it: its name, the stages whose outputs it reads, the
type of the manifest it writes, and the version of its output format.

Each stage module of `mediswift.stages` declares its own `STAGE`. The ordered list of stages,
each with the flow that runs it, is `flows.registry.STAGES`: the one place the pipeline's
stages and their order are written. Library functions that walk the pipeline
(`mediswift.graph.plan`, `select_stages`) take that list as an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mediswift.manifests import Manifest


@dataclass(frozen=True)
class StageDef:
    name: str
    inputs: tuple[str, ...]  # the stages whose outputs it reads, each earlier in the order
    manifest: type[Manifest]  # what its output's manifest.json holds
    # Bump when the output's format or meaning changes for the same settings: it re-keys the
    # stage and everything downstream.
    version: int
    # Its settings are the recipe section of its name; a stage without one is keyed by its
    # inputs and version only.
    has_section: bool = True


def select_stages(stages: Sequence[StageDef], selection: str | list[str] | None) -> list[str]:
    """Normalise a stage selection ('download,parse' or a list; None or 'all' = every stage)
    into pipeline order."""
    names = [s.name for s in stages]
    if selection is None or selection in ("", "all", ["all"]):
        return names
    items = selection.split(",") if isinstance(selection, str) else list(selection)
    wanted = [s.strip() for s in items if s.strip()]
    unknown = [s for s in wanted if s not in names]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(names)}")
    return [s for s in names if s in wanted]


def check_order(stages: Sequence[StageDef]) -> None:
    """Every stage's inputs come earlier in the list, and no name is given twice."""
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise ValueError(f"stage '{s.name}' is listed twice")
        late = [i for i in s.inputs if i not in seen]
        if late:
            raise ValueError(f"stage '{s.name}' reads {late}, which do not come before it")
        seen.add(s.name)
