"""Digests of data-stage outputs: every shard carries its size and sha256, checked when read.

A shard writer (document shards: `mediswift.data.shards`; token shards:
`mediswift.text.token_shards`) records `<shard>.digest.json` beside the shard before renaming
the shard into place: `{"file", "bytes", "sha256"}`. A reader calls `verify` before it trusts
the bytes. A shard that does not match (a flipped bit, a copy
cut short, a sidecar that no longer parses) raises `DamagedFile`, naming the file; the reader
then calls `set_aside`, which moves the shard to `<home>/quarantine/<its path under home>` and
takes back the "done" of everything that listed it (its unit's manifest and the stage manifests
naming it), so the next run makes it again. A shard written before digests existed has no
sidecar: it is read unchecked, as before.

sha256, not blake2b: with the SHA extensions of current x86 and ARM CPUs hashlib's sha256 runs
at about 2 GB/s, blake2b at 1.3 (xxhash is not a dependency); see the README for the cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from mediswift.artifacts import MANIFEST, write_atomic

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".digest.json"
ALGO = "sha256"
QUARANTINE_DIR = "quarantine"  # as `mediswift.data.quarantine` moves raw files
CHUNK = 1 << 20


class DamagedFile(ValueError):
    """A file whose bytes do not match the digest recorded when it was written."""

    def __init__(self, path: Path | str, why: str) -> None:
        self.path = Path(path)
        self.why = why
        super().__init__(f"{path}: {why}")

    def __reduce__(self) -> tuple[type[DamagedFile], tuple[Path, str]]:
        # Process pools pickle a worker's exception: rebuild it from both fields.
        return (type(self), (self.path, self.why))


class SetAside(DamagedFile):
    """A file a reader of this run (or of an earlier one) already found damaged and moved
    aside: a retry of the same unit says so instead of "no such file"."""


def sidecar(path: Path) -> Path:
    """Where the digest of `path` is recorded: `<path>.digest.json`."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_sidecar(path: Path) -> bool:
    return Path(path).name.endswith(SIDECAR_SUFFIX)


def digest_of(path: Path) -> tuple[int, str]:
    """(bytes, sha256 hex) of a file, read in 1 MiB blocks."""
    h = hashlib.new(ALGO)
    size = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def record(path: Path, name: str | None = None) -> dict[str, Any]:
    """The digest record of `path` (its size and sha256), under the name `name` (the final
    name, when `path` is the temporary file a writer is about to rename)."""
    size, hexdigest = digest_of(path)
    return {"file": name or Path(path).name, "bytes": size, ALGO: hexdigest}


def write_sidecar(tmp: Path, final: Path) -> dict[str, Any]:
    """Record the digest of `tmp` (complete, not yet renamed) as the sidecar of `final`.

    Called before the rename: a shard under its final name always has its sidecar. A writer
    killed between the two leaves a sidecar for a missing or older file; its unit has no
    manifest, so the next run writes both again."""
    rec = record(tmp, Path(final).name)
    write_atomic(sidecar(final), json.dumps(rec, sort_keys=True) + "\n")
    return rec


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The recorded digest of `path`; None when none was recorded (a shard written before
    digests); `DamagedFile` when the sidecar itself is damaged."""
    side = sidecar(path)
    try:
        text = side.read_bytes()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise DamagedFile(side, f"digest record does not parse ({e})") from e
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("bytes"), int)
        or not isinstance(rec.get(ALGO), str)
    ):
        raise DamagedFile(side, "not a digest record")
    return rec


def check(path: Path, rec: dict[str, Any], size: int, hexdigest: str) -> None:
    if size != rec["bytes"]:
        raise DamagedFile(path, f"{size} bytes, {rec['bytes']} were written (cut short?)")
    if hexdigest != rec[ALGO]:
        raise DamagedFile(path, f"{ALGO} differs from the one recorded when it was written")


# Files this process has verified, with what their stat said then: a reader that opens one
# shard several times (the filter scans, then writes) hashes it once while it is unchanged.
_verified: dict[Path, tuple[int, ...]] = {}


def _stamp(path: Path) -> tuple[int, ...]:
    st, side = os.stat(path), os.stat(sidecar(path))
    return (st.st_ino, st.st_size, st.st_mtime_ns, side.st_ino, side.st_mtime_ns)


def verify(path: Path) -> bool:
    """Check `path` against its sidecar: True when it matches, False when it has none;
    `DamagedFile` (naming the file) when it does not match or is missing."""
    rec = read_sidecar(path)
    if rec is None:
        if not os.path.exists(path) and (aside := set_aside_copy(path)) is not None:
            raise SetAside(path, f"set aside to {aside} earlier; the next run makes it again")
        return False
    key = Path(path).resolve()
    try:
        stamp = _stamp(path)
    except FileNotFoundError:
        raise DamagedFile(path, "missing (its digest record is there)") from None
    if _verified.get(key) == stamp:
        return True
    if stamp[1] != rec["bytes"]:  # cheap: no need to read a file of the wrong size
        check(path, rec, stamp[1], "")
    check(path, rec, *digest_of(path))
    _verified[key] = stamp
    return True


# ---- taking back "done" -------------------------------------------------------------------


def home_of(path: Path) -> Path | None:
    """The home a unit's file lies in (`<home>/<stage>/units/<key>/<file>`), else None."""
    p = Path(path).resolve()
    parents = p.parents
    if len(parents) >= 4 and parents[1].name == "units":
        return parents[3]
    return None


def _aside(home: Path, path: Path) -> Path | None:
    """Move one file to `<home>/quarantine/<its path under home>`; None when it is gone (a
    second rank moved it first) or not under home."""
    try:
        rel = path.resolve().relative_to(home.resolve())
    except (ValueError, FileNotFoundError):
        return None
    dest = home / QUARANTINE_DIR / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    return dest


def set_aside(path: Path, home: Path | None = None) -> Path | None:
    """Move a damaged shard (and its sidecar) aside and take back the "done" of what made it:
    its unit's manifest moves aside too, and every stage manifest of its stage that names it
    is removed, so the next run makes the unit, and the stage, again (every other unit stays
    done). Returns where the shard went (None when it was not under a home's units)."""
    path = Path(path)
    home = home or home_of(path)
    if home is None:
        return None
    rel = str(path.resolve().relative_to(home.resolve()))
    dest = _aside(home, path)
    _aside(home, sidecar(path))
    _aside(home, path.parent / MANIFEST)
    stage = rel.split(os.sep, 1)[0]
    for manifest in sorted((home / stage).glob(f"*/{MANIFEST}")):
        if manifest.parent.name == "units":
            continue
        try:
            listed = rel in manifest.read_text(errors="replace")
        except OSError:
            continue
        if listed:
            manifest.unlink(missing_ok=True)
            log.warning("%s: not done any more (it lists the damaged %s)", manifest, rel)
    return dest if dest is not None else home / QUARANTINE_DIR / rel


def set_aside_copy(path: Path) -> Path | None:
    """Where `set_aside` put `path`, if it did (and the copy is still there)."""
    home = home_of(path)
    if home is None:
        return None
    copy = home / QUARANTINE_DIR / Path(path).resolve().relative_to(home)
    return copy if copy.is_file() else None


def damaged(e: DamagedFile, what: str) -> DamagedFile:
    """`e` after `set_aside`: the error says where the file went and that the next run makes
    it again."""
    if isinstance(e, SetAside):
        return DamagedFile(e.path, f"damaged {what}: {e.why}")
    shard = e.path
    if is_sidecar(shard):
        shard = shard.with_name(shard.name[: -len(SIDECAR_SUFFIX)])
    dest = set_aside(shard)
    where = f"; moved aside to {dest}" if dest is not None else ""
    again = ", the next run makes it again" if dest is not None else ""
    return DamagedFile(e.path, f"damaged {what}: {e.why}{where}{again}")
