"""The library's side of a team's tracking server: the warning about a SQLite store on a network
file system (on a fake mounts table), a shared server's URI for every home, and a home's id."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediswift.tracking import adopt_home_store_if_default, resolve_tracking_uri
from mediswift.tracking.store import home_id
from mediswift.tracking.uris import default_tracking_uri, network_fs, shared_store_warning


@contextlib.contextmanager
def _warnings() -> Iterator[list[str]]:
    """The warnings of the store module, collected on its own logger (caplog's handler on the
    root logger is gone once a test imports Prefect, which sets up logging)."""
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("mediswift.tracking.store")
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)


def _mounts(tmp_path: Path, lines: list[str]) -> Path:
    table = tmp_path / "mounts"
    table.write_text("\n".join(lines) + "\n")
    return table


@pytest.fixture()
def mounts(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A mounts table with the home under an NFS mount, and a local folder beside it."""
    shared = tmp_path / "shared"
    local = tmp_path / "local"
    table = _mounts(
        tmp_path,
        [
            "overlay / overlay rw,relatime 0 0",
            "proc /proc proc rw,nosuid 0 0",
            f"tmpfs {tmp_path} tmpfs rw 0 0",
            f"fileserver:/export/lab {shared} nfs4 rw,vers=4.2,hard 0 0",
        ],
    )
    return table, shared / "alice" / ".mediswift", local / ".mediswift"


def test_network_file_systems_are_found_by_the_longest_mount_point(
    tmp_path: Path, mounts: tuple[Path, Path, Path]
) -> None:
    table, on_nfs, on_local = mounts
    assert network_fs(on_nfs, table) == "nfs4"
    assert network_fs(on_local, table) is None  # tmpfs
    lustre = _mounts(tmp_path, [f"10.0.0.1@tcp:/scratch {tmp_path} lustre rw 0 0"])
    assert network_fs(on_local, lustre) == "lustre"
    cifs = _mounts(tmp_path, [f"//nas/share {tmp_path} cifs rw 0 0"])
    assert network_fs(on_local, cifs) == "cifs"
    sshfs = _mounts(tmp_path, [f"me@host:/data {tmp_path} fuse.sshfs rw 0 0"])
    assert network_fs(on_local, sshfs) == "fuse.sshfs"
    # A mount point with a space, written in octal as the kernel does.
    spaced = tmp_path / "lab share"
    escaped = str(spaced).replace(" ", "\\040")
    assert network_fs(spaced / "h", _mounts(tmp_path, [f"srv:/x {escaped} nfs rw 0 0"])) == "nfs"
    assert network_fs(on_local, tmp_path / "no-such-table") is None


def test_multi_node_training_on_a_sqlite_store_over_nfs_is_warned_about(
    mounts: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    table, on_nfs, on_local = mounts
    warning = shared_store_warning(None, on_nfs, 2, table)
    assert warning is not None and "\n" not in warning
    assert "nfs4" in warning and "2 nodes" in warning and "tracking server" in warning
    assert "tracking.tracking_uri: http://<host>:5000" in warning
    # One node, a local home, or a tracking server: nothing to say.
    assert shared_store_warning(None, on_nfs, 1, table) is None
    assert shared_store_warning(None, on_local, 4, table) is None
    assert shared_store_warning("http://10.0.0.2:5000", on_nfs, 4, table) is None
    # A SQLite store the recipe names elsewhere on the network file system counts too.
    named = f"sqlite:///{on_nfs.parent / 'team.db'}"
    assert shared_store_warning(named, on_local, 2, table) is not None


def test_the_warning_is_logged_at_start(
    mounts: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mediswift.tracking.uris as uris

    table, on_nfs, _ = mounts
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(uris, "MOUNTS", table)
    with _warnings() as said:
        adopt_home_store_if_default(None, on_nfs, nnodes=3)
    assert len(said) == 1 and "use a tracking server" in said[0]
    assert (on_nfs / "mlflow.db").is_file()  # the store is still made


def test_a_shared_server_is_every_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, other = tmp_path / "served", tmp_path / "other"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MEDISWIFT_HOME", str(served))
    assert resolve_tracking_uri(None, other) == default_tracking_uri(other)
    monkeypatch.setenv("MEDISWIFT_TRACKING_SHARED", "1")
    assert resolve_tracking_uri(None, other) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db", other) == "sqlite:///x.db"


def test_a_home_keeps_one_id(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    home = tmp_path / "home"
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: home_id(home), range(16)))
    assert len(ids) == 1 and len(ids.pop()) == 32
    assert [p.name for p in home.iterdir()] == ["home-id"]  # no temporary file left
    moved = tmp_path / "moved"
    home.rename(moved)
    assert home_id(moved) == (moved / "home-id").read_text().strip()
    assert home_id(tmp_path / "another") != home_id(moved)


def test_an_alias_set_by_two_homes_at_once_is_set_again() -> None:
    """The store's read-then-insert of an alias fails for the slower of two writers (a 400 from
    the server): it is set again; an error of another kind is not retried."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, RESOURCE_DOES_NOT_EXIST

    from mediswift.tracking.registry import _retry_on_collision

    calls = []

    def collides_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("duplicate key value", error_code=BAD_REQUEST)
        return "set"

    assert _retry_on_collision(collides_once) == "set" and len(calls) == 2

    def missing() -> None:
        calls.append(1)
        raise MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST)

    calls.clear()
    with pytest.raises(MlflowException):
        _retry_on_collision(missing)
    assert len(calls) == 1


def test_a_multi_node_recipe_is_warned_about_when_the_pipeline_starts(
    mounts: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow's first step (`tasks.tracking.use_home_store`) passes the recipe's nodes."""
    import mediswift.tracking.uris as uris
    from mediswift.config import load_recipe
    from tasks.tracking import use_home_store

    table, on_nfs, _ = mounts
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(uris, "MOUNTS", table)
    cfg = load_recipe(str(Path(__file__).parent / "recipes" / "tiny.yaml"))
    with _warnings() as said:
        use_home_store(cfg, on_nfs)
        assert said == []  # one node
        two = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"nnodes": 2})})
        use_home_store(two, on_nfs)
    assert len(said) == 1 and "2 nodes would write" in said[0]
