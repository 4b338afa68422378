"""The whole `mediswift` flow on the tiny recipe under the Prefect test harness.

Checks the artifact chain, that a second run with nothing changed is all Cached (no task runs
its code), and that changing one fine-tuning setting re-runs only fine-tuning and evaluation.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.overrides import Overrides

TINY = str(Path(__file__).parent / "recipes" / "tiny.yaml")
pytestmark = pytest.mark.slow


async def _task_states(flow_run_id: UUID) -> Counter[tuple[str, str]]:
    """(task name, state name) of every task run of a flow run and its subflows."""
    async with get_client() as client:
        runs = [flow_run_id]
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        runs += [c.id for c in children]
        out: Counter[tuple[str, str]] = Counter()
        for rid in runs:
            for tr in await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [rid]})
            ):
                out[(tr.task_key.rsplit("-", 1)[0], tr.state.name if tr.state else "?")] += 1
        return out


def _run(home: Path, mirror: Path, overrides: Overrides | None = None) -> Counter:
    state = mediswift(
        recipe=TINY, home=str(home), mirror=str(mirror), overrides=overrides, return_state=True
    )
    assert state.is_completed(), state
    return asyncio.run(_task_states(state.state_details.flow_run_id))


def test_full_flow_caches_and_reruns_only_what_changed(prefect_harness, tmp_path, mirror_dir):
    home = tmp_path / "home"
    first = _run(home, mirror_dir)
    assert first and all(state == "Completed" for (_, state) in first), first

    cfg = load_recipe(TINY, mirror=str(mirror_dir))
    arts = plan(cfg, home)
    assert all(a.done() for a in arts.values())
    docs = arts["filter"].manifest()["counts"]["kept"]
    assert docs["train"] > 0 and docs["validation"] > 0
    assert len(arts["pretrain"].manifest()["variants"]) == 2
    assert (home / "report" / "tiny" / "report.html").exists()

    # Nothing changed: every stage finds its manifest, so no task runs its code.
    second = _run(home, mirror_dir)
    assert all(state == "Cached" for (_, state) in second), second

    # One more seed: fine-tuning re-keys, its finished grid points are Cached, only the new
    # points and the evaluation run; nothing upstream of fine-tuning runs.
    changed = _run(home, mirror_dir, Overrides(finetune_seeds=[0, 1]))
    upstream = ("download", "parse", "filter", "vocab", "tokenize", "pretrain")
    assert not [n for (n, _) in changed if n.startswith(upstream)], changed
    # 2 variants x 2 tasks: seed 0's points are reused, seed 1's are trained.
    assert changed[("finetune_point", "Cached")] == 4, changed
    assert changed[("finetune_point", "Completed")] == 4, changed
    assert changed[("evaluate_report", "Completed")] == 1, changed
    manifests = [json.loads(p.read_text()) for p in home.glob("evaluate/*/manifest.json")]
    assert len(manifests) == 2

    # Only the finetune stage, re-keyed (seed 1 alone: its points exist): the report stays
    # whole, showing the newest evaluate output of this recipe, marked as an earlier run.
    state = mediswift(
        recipe=TINY, home=str(home), mirror=str(mirror_dir), stages=["finetune"],
        overrides=Overrides(finetune_seeds=[1]), return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state
    report = (home / "report" / "tiny" / "report.md").read_text()
    assert "Table 3" in report and "(an earlier run)" in report
    assert "- code version: " in report and "- date: " in report
