"""A home remembers the source each recipe ran with, so commands given none find its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.registry import plan
from mediswift.config import load_recipe
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


def test_a_mistyped_mirror_is_refused_at_load(tmp_path: Path, monkeypatch):
    with pytest.raises(ValueError, match=r"^--mirror .*mirrorr: no such folder$"):
        load_recipe("demo", mirror=str(tmp_path / "mirrorr"), home=tmp_path / "home")
    monkeypatch.setenv("MEDISWIFT_MIRROR", str(tmp_path / "mirrorr"))
    with pytest.raises(ValueError, match=r"^MEDISWIFT_MIRROR .*mirrorr: no such folder$"):
        load_recipe("demo", home=tmp_path / "home")


@pytest.mark.slow
def test_a_failed_run_leaves_the_remembered_source(prefect_harness, tmp_path: Path):
    """Only a source that worked is remembered: a failed try with another one (here a stage
    whose input is missing) keeps the source the home's outputs were made from."""
    from flows.pipeline import mediswift

    home, other = tmp_path / "home", tmp_path / "other-mirror"
    other.mkdir()
    remember(home, "tiny", "/data/mirror")
    before = (home / SOURCES_FILE).read_text()
    tiny = str(Path(__file__).parent / "recipes" / "tiny.yaml")
    state = mediswift(
        recipe=tiny, stages=["parse"], home=str(home), mirror=str(other), return_state=True
    )
    assert state.is_failed()
    assert (home / SOURCES_FILE).read_text() == before


@pytest.mark.slow
def test_a_run_that_worked_remembers_its_source(prefect_harness, tmp_path: Path, mirror_dir):
    from flows.pipeline import mediswift

    home = tmp_path / "home"
    tiny = str(Path(__file__).parent / "recipes" / "tiny.yaml")
    mediswift(recipe=tiny, stages=["download"], home=str(home), mirror=str(mirror_dir))
    assert remembered(home, "tiny") == (True, str(mirror_dir.resolve()))
