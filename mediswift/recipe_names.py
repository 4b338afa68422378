"""One recipe per name in a home. A recipe's name names its report (`<home>/report/<name>`), its
remembered source and its MLflow alias (`recipe-<name>`), so a copied recipe that kept the name
of another would silently take them over. The home records which recipe file each name came
from (`<home>/recipes.json`: name -> file and a digest of its settings); another file under a
taken name is refused unless its settings are the same (a copy, or the project moved).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mediswift.artifacts import content_key, read_home_json, write_atomic

log = logging.getLogger(__name__)

NAMES_FILE = "recipes.json"
MAX_BYTES = 1 << 20


def _read(home: Path) -> dict[str, dict[str, str]]:
    path = home / NAMES_FILE
    data = read_home_json(path, "a recipe-names file", MAX_BYTES)
    if data is None:
        return {}
    ok = isinstance(data, dict) and all(
        isinstance(v, dict)
        and isinstance(v.get("file"), str)
        and isinstance(v.get("settings"), str)
        for v in data.values()
    )
    if not ok:
        log.warning("ignoring %s: not a mapping of recipe name -> file and settings", path)
        return {}
    return data


def settings_digest(sections: dict[str, Any]) -> str:
    return content_key(sections)


def claim_name(home: Path, name: str, file: Path, sections: dict[str, Any]) -> None:
    """Record that `name` is the recipe in `file` (whose settings, overrides aside, are
    `sections`), or refuse another recipe under a taken name (the caller holds the home lock)."""
    data = _read(home)
    mine = {"file": str(Path(file).resolve()), "settings": settings_digest(sections)}
    taken = data.get(name)
    if taken == mine:
        return
    if taken and taken["file"] != mine["file"] and taken["settings"] != mine["settings"]:
        raise ValueError(
            f"recipe name '{name}' is taken in this home by {taken['file']}, whose settings "
            f"differ: give {file} another `name:` (its report, source and MLflow alias are "
            "named by it), or use another home"
        )
    data[name] = mine
    write_atomic(home / NAMES_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")
