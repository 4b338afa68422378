"""Artifact layout, content keys and manifests.

Every stage output is a directory `<home>/<stage>/<key>/` where `key` hashes the stage config,
the keys of its inputs and the stage's format version. `manifest.json` is written last and
atomically: a directory without it is incomplete and is never read as done. Units of work inside
a stage (a file, a shard, a model variant, a grid point) follow the same rule with their own
key under `<home>/<stage>/units/<key>/`, so a unit shared by two stage configs is done once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MANIFEST = "manifest.json"


def _canonical(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _canonical(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def content_key(*parts: Any, length: int = 16) -> str:
    """A stable hex digest of JSON-able parts (pydantic models, dicts, strings, numbers)."""
    blob = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_digest(path: Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tmp_path(path: Path) -> Path:
    """A sibling temporary name for writers that need a path (Parquet, safetensors)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@dataclass(frozen=True)
class Artifact:
    """One content-addressed output directory (a stage output or a unit of work)."""

    stage: str
    key: str
    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def done(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        if not self.done():
            raise FileNotFoundError(
                f"{self.stage} output {self.path} is not complete (no {MANIFEST}): "
                f"run the '{self.stage}' stage first"
            )
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, data: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest last: after this the artifact counts as done."""
        full = {"stage": self.stage, "key": self.key, **data}
        write_atomic(self.manifest_path, json.dumps(full, indent=2, sort_keys=True) + "\n")
        return full

    def ensure(self) -> Artifact:
        self.path.mkdir(parents=True, exist_ok=True)
        return self


def stage_artifact(
    home: Path, stage: str, config: Any, inputs: Iterable[Artifact] = (), version: int = 1
) -> Artifact:
    """The output directory of `stage` for this config and these inputs."""
    key = content_key(stage, version, config, [i.key for i in inputs])
    return Artifact(stage, key, home / stage / key)


def unit_artifact(home: Path, stage: str, *parts: Any) -> Artifact:
    """A unit of work inside a stage, keyed by whatever determines its content."""
    key = content_key(stage, *parts)
    return Artifact(stage, key, home / stage / "units" / key)


def safe_child(root: Path, name: str) -> Path:
    """`root/name`, refusing names that would escape `root` (absolute, `..`, empty)."""
    rel = Path(name)
    if not name or rel.is_absolute() or any(p in ("..", "") for p in rel.parts) or "\\" in name:
        raise ValueError(f"refusing unsafe file name {name!r} (would leave {root})")
    out = (root / rel).resolve()
    if not out.is_relative_to(root.resolve()):
        raise ValueError(f"refusing unsafe file name {name!r} (would leave {root})")
    return out


def unit_at(home: Path, stage: str, key: str) -> Artifact:
    """The unit `key` of `stage` (the layout of `unit_artifact`, from a key already known)."""
    return Artifact(stage, key, home / stage / "units" / key)
