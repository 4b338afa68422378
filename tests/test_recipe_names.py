"""A recipe name stands for one recipe in a home: its report, remembered source and MLflow alias
are named by it, so a copy with other settings under the same name is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediswift.config import recipe_settings
from mediswift.recipe_names import NAMES_FILE, claim_name

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"


def test_a_copy_with_other_settings_under_a_taken_name_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    claim_name(home, "tiny", *recipe_settings(str(TINY)))
    claim_name(home, "tiny", *recipe_settings(str(TINY)))  # the same recipe again: fine

    same = tmp_path / "copy.yaml"
    same.write_text(TINY.read_text())
    claim_name(home, "tiny", *recipe_settings(str(same)))  # a copy: same settings, fine

    other = tmp_path / "other.yaml"
    other.write_text(TINY.read_text() + "\nvocab:\n  vocab_size: 300\n")
    with pytest.raises(ValueError, match="recipe name 'tiny' is taken in this home by"):
        claim_name(home, "tiny", *recipe_settings(str(other)))
    assert json.loads((home / NAMES_FILE).read_text())["tiny"]["file"] == str(same.resolve())

    claim_name(home, "other", *recipe_settings(str(other)))  # under its own name: fine
