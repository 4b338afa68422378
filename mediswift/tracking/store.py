"""A relocatable home store. MLflow can only record absolute artifact locations, so when a home
has been copied or moved, the first `Tracker` that opens it re-points every location that
names the old `mlruns` folder at this one (`adopt_home_store`). Against a tracking server,
experiments get the server's default location instead (proxied `mlflow-artifacts:`), so
clients never write outside the server's artifact root."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from mediswift.tracking.internals import forget_artifact_repos
from mediswift.tracking.uris import (
    ARTIFACTS_DIR,
    HOME_DB,
    default_tracking_uri,
    resolve_tracking_uri,
    shared_store_warning,
    sqlite_path,
)

log = logging.getLogger(__name__)

HOME_ID_FILE = "home-id"  # a random id, made once per home: whose runs they are on a server
_ADOPTED: set[tuple[str, str]] = set()
_ADOPT_LOCK = threading.Lock()
_TEXT_TYPES = ("CHAR", "TEXT", "CLOB", "STRING", "JSON")


def is_home_store(tracking_uri: str, artifact_root: Path) -> bool:
    db = sqlite_path(tracking_uri)
    return (
        db is not None
        and artifact_root.name == ARTIFACTS_DIR
        and db.resolve() == (artifact_root.parent / HOME_DB).resolve()
    )


def adopt_home_store_if_default(tracking_uri: str | None, home: Path, nnodes: int = 1) -> None:
    """Make the home's own MLflow store usable: created whole, repaired after a migration that
    stopped half-way, and re-pointed when the home was copied or moved (a store the recipe
    names elsewhere is left alone). With `nnodes` > 1 (multi-node pre-training), a SQLite
    store on a network file system is warned about in one line (`shared_store_warning`)."""
    warning = shared_store_warning(tracking_uri, home, nnodes)
    if warning:
        log.warning(warning)
    if resolve_tracking_uri(tracking_uri, home) == default_tracking_uri(home):
        create_or_repair_home_store(home)
        adopt_home_store(home)


def create_or_repair_home_store(home: Path) -> None:
    """A new home store is made under a temporary name and renamed when MLflow's migrations are
    done: migrations cut short (a full disk, a kill) would leave a store that every later run
    fails to open. An existing store loses the tables a cut-short SQLite batch migration leaves
    (`_alembic_tmp_*`), which are what stops the migration from running again."""
    db = home / HOME_DB
    if db.is_file():
        with contextlib.closing(sqlite3.connect(db, timeout=120, isolation_level=None)) as con:
            left = con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name GLOB '_alembic_tmp_*'"
            ).fetchall()
            for (name,) in left:
                con.execute(f'DROP TABLE "{name}"')
        return
    from mlflow import MlflowClient

    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{HOME_DB}.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.unlink(missing_ok=True)
    try:
        MlflowClient(f"sqlite:///{tmp.resolve()}").search_experiments(max_results=1)  # migrates
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs
            os.link(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def adopt_home_store(home: Path) -> dict[str, str]:
    """Re-point the artifact locations of `home`'s own store that name another `mlruns` folder
    (the home was copied or moved) at `<home>/mlruns`; returns {old prefix: new prefix}.

    Why: MLflow keeps absolute locations (experiments, runs, logged models, model versions),
    so a copied home would read and write the old home's artifacts. An experiment location
    `<R>/<name or id>` whose `R` is a folder named `mlruns` other than this home's is taken as
    this home's, moved; every text value of the store that starts with `R` (as a URI or a plain
    path) is rewritten, and the file is vacuumed so the old path is not left in free pages. The
    `MLmodel` files of logged models (which record their own location) are rewritten too. Done
    once per process and home; a store already in place is only read. (The experiment
    `Default`, which MLflow places under the working directory of whoever created the store,
    is brought into the home the same way.)
    """
    home = home.resolve()
    db = home / HOME_DB
    key = (str(db), str(home))
    with _ADOPT_LOCK:
        if key in _ADOPTED or not db.is_file():
            return {}
        with contextlib.closing(sqlite3.connect(db, timeout=120, isolation_level=None)) as con:
            moved = _moved_roots(con, home / ARTIFACTS_DIR)
            if moved:
                _rewrite_prefixes(con, moved)
        if moved:
            _rewrite_model_files(home / ARTIFACTS_DIR, moved)
            forget_artifact_repos()
        _ADOPTED.add(key)
        return moved


def _moved_roots(con: sqlite3.Connection, root: Path) -> dict[str, str]:
    """{old root: new root} in both spellings (file URI, plain path) of every moved root."""
    rows = con.execute("SELECT experiment_id, name, artifact_location FROM experiments")
    new_uri, new_path = root.as_uri(), str(root)
    moved: dict[str, str] = {}
    for exp_id, name, location in rows:
        if not location or "/" not in location:
            continue
        parent, last = location.rstrip("/").rsplit("/", 1)
        if unquote(last) not in (str(exp_id), name):
            continue  # a location someone chose: not this home's layout
        is_uri = parent.startswith("file:")
        path = unquote(urlparse(parent).path) if is_uri else parent
        if not path.startswith("/") or Path(path).name != ARTIFACTS_DIR or path == new_path:
            continue
        moved[path] = new_path
        moved[Path(path).as_uri()] = new_uri
        if is_uri:
            moved[parent] = new_uri  # as stored (another encoding, or file:/ with one slash)
    return moved


def _rewrite_prefixes(con: sqlite3.Connection, moved: dict[str, str]) -> None:
    """Replace each old prefix (followed by '/' or the end) by its new one in every text
    column of every table, in one transaction; then vacuum."""
    tables = [
        r[0]
        for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    ]
    con.execute("BEGIN IMMEDIATE")
    try:
        for table in tables:
            for col in _text_columns(con, table):
                for old, new in sorted(moved.items(), key=lambda kv: -len(kv[0])):
                    con.execute(
                        f'UPDATE "{table}" SET "{col}" = ? || substr("{col}", ?) '
                        f'WHERE "{col}" = ? OR substr("{col}", 1, ?) = ?',
                        (new, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("VACUUM")


def _rewrite_model_files(root: Path, moved: dict[str, str]) -> None:
    """The same prefixes in the `MLmodel` files under `root` (each names its own location)."""
    for path in root.rglob("MLmodel"):
        text = path.read_text(encoding="utf-8")
        new = text
        for old, repl in sorted(moved.items(), key=lambda kv: -len(kv[0])):
            new = re.sub(
                re.escape(old) + r"(?=/|\s|$)",
                lambda _m, r=repl: r,
                new,
                flags=re.MULTILINE,
            )
        if new != text:
            tmp = path.with_name(f".{path.name}.relocating")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, path)


def _text_columns(con: sqlite3.Connection, table: str) -> list[str]:
    cols = con.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [c[1] for c in cols if any(t in (c[2] or "").upper() for t in _TEXT_TYPES)]


def home_id(home: Path) -> str:
    """The home's id (`<home>/home-id`, a random hex string made on first use; a moved home
    keeps it, a copied one shares it). Made under a temporary name and linked into place, so
    that two processes making it at once agree on one."""
    path = home / HOME_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        found = path.read_text(encoding="ascii").strip()
        if found:
            return found
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{HOME_ID_FILE}.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(uuid.uuid4().hex + "\n", encoding="ascii")
    try:
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()
