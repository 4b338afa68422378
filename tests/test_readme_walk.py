"""The README, walked as a user would on a fresh copy (`tests/readme_walk.py`): the quick start,
"Running it", "Using the trained models" and "As Prefect deployments", in order."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from readme_walk import REPO, TINY, walk, walked_blocks
from server_fixtures import assert_reopened_by_the_reports_command, report_flow_run

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.subprocess]


def test_the_readme_sections_that_users_follow_are_marked() -> None:
    sections = {b.section for b in walked_blocks((REPO / "README.md").read_text())}
    assert {"Quick start", "Running it", "Using the trained models"} <= sections
    assert any("make serve" in b.code for b in walked_blocks((REPO / "README.md").read_text()))


def test_walk_the_readme(tmp_path: Path, mirror_dir: Path) -> None:
    project = tmp_path / "project"
    blocks = walk(project, mirror_dir)
    assert len(blocks) >= 6
    home = project / ".mediswift"
    assert (project / "exports" / "tiny-dense-hoc" / "config.json").is_file()
    # What walking it by hand found, checked on the walked home.
    _the_report_reads_and_links_the_run_that_evaluated(home)
    _a_mistyped_mirror_leaves_the_source_and_export_working(project, mirror_dir)


def _the_report_reads_and_links_the_run_that_evaluated(home: Path) -> None:
    """After `make serve`, a full-pipeline and a finetune deployment run and `make stop`: the
    flow-run link is the run that evaluated, in the database the report's command reopens; the
    Runs paragraph keeps its words on the page; the figures are drawn at the report's width."""
    import lxml.html
    from PIL import Image

    flow_run_id, _ = report_flow_run(home, "tiny")
    assert_reopened_by_the_reports_command(home, "tiny", flow_run_id)
    page = lxml.html.fromstring((home / "report" / "tiny" / "report.html").read_text())
    runs = page.xpath("//h2[text()='Runs']/following-sibling::p[1]")[0]
    assert runs.text_content().startswith("$MEDISWIFT_HOME is the artifact root")
    figures = sorted((home / "report" / "tiny").glob("*.png"))
    assert figures
    for png in figures:
        with Image.open(png) as im:
            assert im.width <= 1000, (png.name, im.size)  # shown at its own size, not shrunk


def _a_mistyped_mirror_leaves_the_source_and_export_working(project: Path, mirror: Path) -> None:
    home = project / ".mediswift"
    before = (home / "sources.json").read_text()
    run = [str(project / ".venv/bin/mediswift"), "run", "--recipe", TINY, "--stages", "download"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["MEDISWIFT_HOME"] = str(home)
    typo = subprocess.run([*run, "--mirror", f"{mirror}r"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1, typo.stderr
    assert (home / "sources.json").read_text() == before
    export = [str(project / ".venv/bin/mediswift"), "export", "--recipe", TINY, "--variant",
              "tiny-s75", "--out", str(project / "exports" / "again")]  # fmt: skip
    again = subprocess.run(export, cwd=project, env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
