"""A home remembers the source each recipe ran with, so commands given none find its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediswift.config import load_recipe
from mediswift.graph import plan
from mediswift.sources import SOURCES_FILE, remember, remembered


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("MEDISWIFT_MIRROR", raising=False)


def test_the_remembered_source_gives_the_same_keys(tmp_path: Path, mirror_dir: Path):
    home = tmp_path / "home"
    with_mirror = load_recipe("demo", mirror=str(mirror_dir), home=home)
    assert load_recipe("demo", home=home).mirror is None  # nothing remembered yet
    remember(home, "demo", with_mirror.mirror)
    again = load_recipe("demo", home=home)
    assert again.mirror == str(mirror_dir.resolve())
    keys = {s: a.key for s, a in plan(again, home).items()}
    assert keys == {s: a.key for s, a in plan(with_mirror, home).items()}


def test_a_given_source_wins_and_none_means_upstream(tmp_path: Path, mirror_dir: Path, monkeypatch):
    home = tmp_path / "home"
    remember(home, "demo", str(mirror_dir))
    assert load_recipe("demo", mirror="none", home=home).mirror is None
    other = tmp_path / "other-mirror"
    other.mkdir()
    assert load_recipe("demo", mirror=str(other), home=home).mirror == str(other)
    monkeypatch.setenv("MEDISWIFT_MIRROR", "none")
    assert load_recipe("demo", home=home).mirror is None
    # a recipe the home never ran keeps its own setting
    assert remembered(home, "repro-small") == (False, None)


def test_upstream_is_remembered_too(tmp_path: Path):
    home = tmp_path / "home"
    remember(home, "demo", None)
    assert remembered(home, "demo") == (True, None)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"demo": 3}', "x" * (2 << 20)])
def test_a_sources_file_not_ours_is_ignored(tmp_path: Path, content: str, caplog):
    home = tmp_path / "home"
    home.mkdir()
    (home / SOURCES_FILE).write_text(content)
    assert remembered(home, "demo") == (False, None)
    assert "ignoring" in caplog.text
    remember(home, "demo", "/data/mirror")  # replaced by a valid file
    assert json.loads((home / SOURCES_FILE).read_text()) == {"demo": "/data/mirror"}
