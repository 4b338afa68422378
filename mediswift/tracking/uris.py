"""Where runs are tracked: the home's own SQLite store by default, a server or any URI the
recipe names; URIs written relative to the home so a home can move. A home on a network file
system that several nodes would write through SQLite gets a warning (`shared_store_warning`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

HOME_DB = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
SQLITE_PREFIX = "sqlite:///"
# Set by `make serve-team`: MLFLOW_TRACKING_URI is a tracking server for every home (its store
# is a database in no home), not the store of MEDISWIFT_HOME alone.
SHARED_ENV = "MEDISWIFT_TRACKING_SHARED"
MOUNTS = Path("/proc/mounts")
# File system types whose locks SQLite cannot rely on across machines (SQLite's own advice:
# no database on a network file system with writers on several hosts).
NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs",
        "beegfs", "glusterfs", "cephfs", "ceph", "ocfs2", "gfs2", "pvfs2", "orangefs",
        "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.beegfs", "fuse.s3fs",
        "fuse.gcsfuse", "fuse.juicefs", "fuse.weka", "wekafs", "panfs", "quobyte",
    }
)  # fmt: skip


def default_tracking_uri(home: Path) -> str:
    """SQLite under the artifact root, as an absolute URI."""
    home.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{(home / HOME_DB).resolve()}"


def portable_tracking_uri(uri: str, home: Path) -> str | None:
    """None for the home's own store, else `uri`: what a unit spec written into the home keeps,
    so that the home names no absolute path of its own (see `tracking_uri_in`)."""
    db = sqlite_path(uri)
    if db is not None and db.resolve() == (home / HOME_DB).resolve():
        return None
    return uri


def tracking_uri_in(uri: str | None, home: Path) -> str:
    """The tracking URI a unit spec means: its own, or the store of the home it runs in."""
    return uri or default_tracking_uri(home)


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0])


def is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "databricks")


def resolve_tracking_uri(configured: str | None, home: Path) -> str:
    """The recipe's URI, else MLFLOW_TRACKING_URI, else SQLite under the artifact root.

    MLFLOW_TRACKING_URI is the store of the home named by MEDISWIFT_HOME when both are set (a
    served home: `make serve` sets both): a run for another home uses that home's own store,
    so runs of two homes never mix in one store. With MEDISWIFT_TRACKING_SHARED=1 (`make
    serve-team`: the server's store is a database in no home) it is every home's."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env_store_is_for(home):
        return env
    return default_tracking_uri(home)


def env_store_is_for(home: Path) -> bool:
    """Whether MLFLOW_TRACKING_URI belongs to `home` (MEDISWIFT_HOME unset, or that home, or
    a tracking server shared by every home)."""
    if os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    served = os.environ.get("MEDISWIFT_HOME")
    return not served or Path(served).resolve() == Path(home).resolve()


def mlflow_ui_base() -> str | None:
    """Where a person opens the MLflow UI (set by `make serve`), for links from Prefect."""
    return os.environ.get("MEDISWIFT_MLFLOW_UI")


def network_fs(path: Path, mounts: Path | None = None) -> str | None:
    """The type of the network file system holding `path` (None: a local one, or unknown):
    the longest mount point of the mounts table (`/proc/mounts` layout) that contains it."""
    try:
        table = (mounts or MOUNTS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    target = Path(os.path.realpath(path))
    best, best_type = -1, None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape_mount(fields[1]))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, best_type = len(point.parts), fields[2].lower()
    if best_type is None:
        return None
    base = best_type.split(".", 1)[0]
    return best_type if best_type in NETWORK_FS or base in NETWORK_FS else None


def _unescape_mount(field: str) -> str:
    """A mounts-table path: spaces, tabs, newlines and backslashes are written as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def shared_store_warning(
    configured: str | None, home: Path, nnodes: int, mounts: Path | None = None
) -> str | None:
    """One line when runs would write the home's SQLite store from several nodes over a network
    file system (multi-node pre-training with the default tracking URI), else None."""
    if nnodes <= 1:
        return None
    db = sqlite_path(resolve_tracking_uri(configured, home))
    if db is None:
        return None
    fs = network_fs(db.parent, mounts)
    if fs is None:
        return None
    return (
        f"the MLflow store {db} is SQLite on a network file system ({fs}) that {nnodes} "
        "nodes would write: use a tracking server instead (`make serve-team` on one host, "
        "`tracking.tracking_uri: http://<host>:5000` in the recipe)"
    )
