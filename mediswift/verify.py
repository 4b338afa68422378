"""`mediswift verify`: check a whole home against what its writers recorded, changing nothing.

What is checked:
- every `manifest.json` (a stage output's or a unit's) parses as a JSON object;
- every shard with a digest sidecar (`<shard>.digest.json`: document and token shards, see
  `mediswift.digests`) has the size and sha256 recorded when it was written;
- every checkpoint with `digests.json` (pre-training steps and finals, fine-tuning points) has
  the size and sha256 of each file it lists;
- every shard (`*.parquet`) a manifest lists as `path` exists;
- every raw file a download manifest lists with an md5 (PubMed files, PMC articles) still has
  it.

One line per damaged file says what the next run would make again; the exit status is 1 when
anything is damaged. Nothing is moved: the run that next reads a damaged file moves it aside.
Set-aside copies (`quarantine/`, checkpoints named `*.bad-<n>`) and temporary files are skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift import digests
from mediswift.artifacts import MANIFEST, file_digest

CHECKPOINT_DIGESTS = "digests.json"  # as `mediswift.train.checkpoint` writes it
SKIPPED_DIRS = {digests.QUARANTINE_DIR, "prefect", "prefect-cache", "prefect-results", "logs"}


@dataclass(frozen=True)
class Damage:
    path: Path
    why: str
    remake: str

    def line(self) -> str:
        return f"{self.path}: {self.why}; the next run {self.remake}"


@dataclass
class Report:
    checked: int = 0
    damaged: list[Damage] | None = None

    def __post_init__(self) -> None:
        self.damaged = self.damaged or []


def _walk(home: Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) under home, set-aside copies and temporary files left out."""
    for dirpath, dirnames, filenames in os.walk(home):
        here = Path(dirpath)
        if here == home:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and ".bad-" not in d)
        yield here, sorted(f for f in filenames if not f.startswith("."))


def remade(home: Path, path: Path) -> str:
    """What the next run makes again when `path` (under home) is damaged."""
    try:
        parts = path.resolve().relative_to(home.resolve()).parts
    except ValueError:
        return "reads it again"
    stage = parts[0] if parts else "?"
    if "checkpoints" in parts:
        step = (
            parts[parts.index("checkpoints") + 1]
            if len(parts) > parts.index("checkpoints") + 1
            else "?"
        )
        return f"sets checkpoint {step} aside and resumes {stage} from the one before it"
    if len(parts) >= 3 and parts[1] == "units":
        return f"makes the {stage} unit {parts[2]} again (and the {stage} stage)"
    if len(parts) >= 2:
        return f"runs the {stage} stage ({parts[1]}) again"
    return "makes it again"


def _check_manifest(home: Path, path: Path, report: Report) -> dict[str, Any] | None:
    report.checked += 1
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        why = " ".join(str(e).split()) or type(e).__name__
        report.damaged.append(Damage(path, f"manifest does not parse ({why})", remade(home, path)))
        return None
    if not isinstance(data, dict):
        report.damaged.append(Damage(path, "manifest is not a JSON object", remade(home, path)))
        return None
    return data


def _listed_paths(obj: Any) -> Iterator[str]:
    """The `path` values of a manifest that name shards."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "path" and isinstance(v, str) and v.endswith(".parquet"):
                yield v
            else:
                yield from _listed_paths(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _listed_paths(v)


def _raw_entries(obj: Any) -> Iterator[tuple[str, str]]:
    """(path, md5) of the raw files a download manifest lists with the md5 they were
    downloaded with."""
    if isinstance(obj, dict):
        path, md5 = obj.get("path"), obj.get("md5")
        if isinstance(path, str) and path.startswith("raw/") and isinstance(md5, str):
            yield path, md5
        for v in obj.values():
            yield from _raw_entries(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _raw_entries(v)


def _inside(home: Path, rel: str) -> Path | None:
    p = Path(rel)
    return None if p.is_absolute() or ".." in p.parts else home / p


def _check_listed(
    home: Path, manifest: Path, data: dict[str, Any], report: Report, md5s: dict[Path, str]
) -> None:
    for rel in _listed_paths(data):
        f = _inside(home, rel)
        if f is not None and not f.exists():
            report.damaged.append(Damage(f, f"missing (listed in {manifest})", remade(home, f)))
    for rel, md5 in _raw_entries(data):
        f = _inside(home, rel)
        if f is None or not f.is_file():
            continue  # a raw file that is gone is fetched again by the next download
        if f not in md5s:
            report.checked += 1
            md5s[f] = file_digest(f, "md5")
        if md5s[f] != md5.lower():
            why = f"md5 {md5s[f]} is not the {md5} it was downloaded with"
            again = "that parses it moves it aside and fetches it again"
            report.damaged.append(Damage(f, why, again))


def _check_sidecar(home: Path, side: Path, report: Report) -> None:
    shard = side.with_name(side.name[: -len(digests.SIDECAR_SUFFIX)])
    report.checked += 1
    try:
        digests.verify(shard)
    except digests.DamagedFile as e:
        report.damaged.append(Damage(e.path, e.why, remade(home, shard)))


def _check_checkpoint(home: Path, listed: Path, report: Report) -> None:
    folder = listed.parent
    try:
        entries = json.loads(listed.read_bytes())
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as e:
        why = " ".join(str(e).split())
        report.damaged.append(Damage(listed, f"does not parse ({why})", remade(home, listed)))
        return
    for name, want in sorted(entries.items()):
        f = folder / name
        report.checked += 1
        why = None
        if not isinstance(want, dict) or "sha256" not in want or "bytes" not in want:
            why = f"{listed} holds no digest for it"
        elif not f.is_file():
            why = "missing"
        elif f.stat().st_size != want["bytes"]:
            why = f"{f.stat().st_size} bytes, {want['bytes']} written (cut short?)"
        elif file_digest(f) != want["sha256"]:
            why = "sha256 differs from the one written"
        if why:
            report.damaged.append(Damage(f, why, remade(home, f)))


def verify_home(home: Path) -> Report:
    """Check every recorded digest and manifest of `home` (see the module docstring)."""
    home = Path(home)
    if not home.is_dir():
        raise FileNotFoundError(f"{home}: no such home")
    report = Report()
    md5s: dict[Path, str] = {}  # raw files several manifests list: read once
    for folder, names in _walk(home):
        for name in names:
            path = folder / name
            if name == MANIFEST:
                data = _check_manifest(home, path, report)
                if data is not None:
                    _check_listed(home, path, data, report, md5s)
            elif name.endswith(digests.SIDECAR_SUFFIX):
                _check_sidecar(home, path, report)
            elif name == CHECKPOINT_DIGESTS:
                _check_checkpoint(home, path, report)
    seen: set[Path] = set()  # one line a file, however many manifests list it
    report.damaged = [d for d in report.damaged if not (d.path in seen or seen.add(d.path))]
    return report


def main(home: Path, out: Any = None) -> int:
    """Print one line per damaged file (and a summary); 1 when anything is damaged."""
    import sys

    out = out or sys.stdout
    report = verify_home(home)
    for d in report.damaged:
        print(d.line(), file=out)
    n = len(report.damaged)
    if n:
        print(f"verify: {n} damaged of {report.checked} checked under {home}", file=out)
        return 1
    print(f"verify: {report.checked} checked under {home}, nothing damaged", file=out)
    return 0
