"""Where a home's data came from: the source (a mirror, or upstream) each recipe last ran with.

Content keys name the source, since a mirror's files need not be upstream's: a run against
another source never reuses outputs made from other data. So a finished home is found again
only with the source it was made from. Rather than have every command repeat `--mirror`, the
home remembers it (`<home>/sources.json`, recipe name -> mirror, or null for upstream), and
commands that are given no source (export, the dry run, a re-run, the report) use the
remembered one and say so. `--mirror none` asks for upstream explicitly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mediswift.artifacts import read_home_json, write_atomic

log = logging.getLogger(__name__)

SOURCES_FILE = "sources.json"
UPSTREAM = "none"  # what `--mirror` / MEDISWIFT_MIRROR say for "the real upstream servers"
MAX_BYTES = 1 << 20  # a few recipes' paths: anything larger is not ours


def _read(home: Path) -> dict[str, str | None]:
    path = home / SOURCES_FILE
    data = read_home_json(path, "a sources file", MAX_BYTES)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        log.warning("ignoring %s: not a mapping of recipe name -> source", path)
        return {}
    return data


def remembered(home: Path, recipe: str) -> tuple[bool, str | None]:
    """(whether the home remembers a source for `recipe`, that source: a mirror or None)."""
    data = _read(home)
    return (recipe in data, data.get(recipe))


def remember(home: Path, recipe: str, mirror: str | None) -> None:
    """Record the source `recipe` runs with in this home (the caller holds the home lock)."""
    data = _read(home)
    if recipe in data and data[recipe] == mirror:
        return
    data[recipe] = mirror
    write_atomic(home / SOURCES_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


def describe(mirror: str | None) -> str:
    return mirror or "upstream"
