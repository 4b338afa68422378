"""The README, walked as a user would on a fresh copy (`tests/readme_walk.py`): the quick start,
"Running it", "Using the trained models" and "As Prefect deployments", in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from readme_walk import REPO, walk, walked_blocks

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.subprocess]


def test_the_readme_sections_that_users_follow_are_marked() -> None:
    sections = {b.section for b in walked_blocks((REPO / "README.md").read_text())}
    assert {"Quick start", "Running it", "Using the trained models"} <= sections
    assert any("make serve" in b.code for b in walked_blocks((REPO / "README.md").read_text()))


def test_walk_the_readme(tmp_path: Path, mirror_dir: Path) -> None:
    blocks = walk(tmp_path / "project", mirror_dir)
    assert len(blocks) >= 6
    home = tmp_path / "project" / ".mediswift"
    assert (home / "report").is_dir()
    assert (tmp_path / "project" / "exports" / "tiny-dense-hoc" / "config.json").is_file()
