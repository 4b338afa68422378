"""Artifact layout, content keys and manifests.

Every stage output is a directory `<home>/<stage>/<key>/` where `key` hashes the stage config,
the keys of its inputs and the stage's format version. `manifest.json` is written last and
atomically: a directory without it is incomplete and is never read as done. Units of work inside
a stage (a file, a shard, a model variant, a grid point) follow the same rule with their own
key under `<home>/<stage>/units/<key>/`, so a unit shared by two stage configs is done once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MANIFEST = "manifest.json"

log = logging.getLogger(__name__)
_warned: set[Path] = set()  # unreadable manifests already reported by this process
_warned_lock = threading.Lock()


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
    tmp = tmp_path(path)  # named so that `sweep_stale_tmp` can judge it if we die
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A short tag of this machine: a home may be shared over the network, and a pid means nothing
# on another host.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
# `.<name>.<host>-<pid>-<thread>-<random>.tmp`, as `tmp_path` writes it.
_TMP_NAME = re.compile(
    r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-(?P<thread>[0-9]+)-[0-9a-f]{8}\.tmp$"
)


def tmp_path(path: Path) -> Path:
    """A sibling temporary name for writers that need a path (Parquet, safetensors).

    Unique per writer: two threads of one run (or two runs on one home) writing the same
    target each get their own file, so neither truncates or renames the other's. The host and
    pid are in the name so that `sweep_stale_tmp` can tell a dead writer's leftovers from a
    live writer's file; the random part keeps two writers apart even if a pid is reused.
    """
    writer = f"{_HOST}-{os.getpid()}-{threading.get_native_id()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{writer}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one we may not signal exists too)."""
    if pid <= 0:
        return True  # not a pid we can judge: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def scratch_dir(near: Path) -> Iterator[Path]:
    """A scratch directory beside `near`, named like `tmp_path` files (so `sweep_stale_tmp`
    removes it if its writer is killed), removed when the block ends."""
    path = tmp_path(near)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_tmp(folder: Path, recursive: bool = True) -> list[Path]:
    """Remove the `tmp_path` files under `folder` whose writer is dead; return those removed.

    Why: a writer killed between creating its temporary file and renaming it leaves the file
    behind, forever. Only names that `tmp_path` made are considered, and only those written on
    this host by a pid that no longer exists: a live writer's file (or another host's, or any
    other `.tmp` file) is left alone, so this is safe to run while other runs write.
    """
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames):  # scratch directories (`scratch_dir`) of dead writers
            m = _TMP_NAME.match(name)
            if m is not None and m["host"] == _HOST and not pid_alive(int(m["pid"])):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                dirnames.remove(name)
                removed.append(Path(dirpath) / name)
        if not recursive:
            dirnames.clear()
        for name in filenames:
            m = _TMP_NAME.match(name)
            if m is None or m["host"] != _HOST or pid_alive(int(m["pid"])):
                continue
            stale = Path(dirpath) / name
            try:
                stale.unlink()
            except FileNotFoundError:
                continue  # swept by another run at the same moment
            removed.append(stale)
    return removed


def read_home_json(path: Path, what: str, max_bytes: int = 1 << 20) -> Any:
    """A small JSON file the home keeps (`what` it should be, for the warning), or None when it
    is missing, larger than `max_bytes` or not JSON: such a file is not ours, and is ignored
    with one warning rather than trusted or fatal."""
    try:
        if path.stat().st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSON errors are ValueErrors
        log.warning("ignoring %s (not %s of this project): %s", path, what, e)
        return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`; None when there is none or it does not parse.

    A manifest cut short (a disk that filled, a copy that stopped) marks nothing done: its unit
    runs again and writes a whole one, instead of every run failing on the same file. One
    warning per file and process names it."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError as e:
        _warn_once(path, str(e))
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        _warn_once(path, str(e))
        return None
    if not isinstance(data, dict):
        _warn_once(path, f"a JSON {type(data).__name__}, not an object")
        return None
    return data


def _warn_once(path: Path, why: str) -> None:
    with _warned_lock:
        first = path not in _warned
        _warned.add(path)
    if first:
        log.warning("%s is not a whole manifest (%s): its unit counts as not done", path, why)


def manifest_done(path: Path) -> bool:
    """Whether `path` is a manifest that reads (see `read_manifest`)."""
    return read_manifest(path) is not None


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
        return read_manifest(self.manifest_path) is not None

    def manifest(self) -> dict[str, Any]:
        data = read_manifest(self.manifest_path)
        if data is None:
            raise FileNotFoundError(
                f"{self.stage} output {self.path} is not complete (no readable {MANIFEST}): "
                f"run the '{self.stage}' stage first"
            )
        return data

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
    return unit_at(home, stage, content_key(stage, *parts))


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
    """The unit `key` of `stage`: `<home>/<stage>/units/<key>`, the one place that says so."""
    return Artifact(stage, key, units_dir(home, stage) / key)


def units_dir(home: Path, stage: str) -> Path:
    return home / stage / "units"
