"""A home can be copied or moved: nothing in it names its own absolute path, and a run pointed at
the copy finds everything done and writes only into the copy.

The store part alone (fast): a home's MLflow store is copied, the original deleted, and the
copy opened: experiments, runs and logged models are re-pointed at the copy. The whole pipeline
(slow): the tiny recipe runs into a home, the home is copied and the original deleted, then the
pipeline runs again on the copy (every stage found done), the pretrain stage is made to run
again (its variants answered from the JSON cache records) and evaluate is forced (new MLflow
artifacts and aliases): the old path never reappears and no file of the copy names it.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.tracking import Tracker, adopt_home_store, default_tracking_uri

TINY = str(Path(__file__).parent / "recipes" / "tiny.yaml")


def names_of(root: Path, needle: str) -> list[str]:
    """Files under `root` whose bytes contain `needle` (paths relative to `root`)."""
    raw = needle.encode()
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()
    )


def move(src: Path, dst: Path) -> None:
    """Copy the home, then delete the original: anything still using it fails or recreates it."""
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(src)


def artifact_files(client: MlflowClient, run_id: str) -> list[str]:
    return [f.path for f in client.list_artifacts(run_id)]


@pytest.mark.subprocess
def test_a_moved_store_is_re_pointed_at_the_copy(tmp_path: Path) -> None:
    old, new = tmp_path / "a" / "home", tmp_path / "b" / "home"
    tracker = Tracker(default_tracking_uri(old), "exp", artifact_root=old / "mlruns")
    note = tmp_path / "note.txt"
    note.write_text("first")
    with tracker.run("r") as run:
        run.log_artifact(note)
    move(old, new)
    assert names_of(new, str(old)) == ["mlflow.db"]  # what MLflow stores: absolute locations

    copy = Tracker(default_tracking_uri(new), "exp", artifact_root=new / "mlruns")
    client = copy.client
    assert client.get_experiment(copy.experiment_id).artifact_location.startswith(
        (new / "mlruns").as_uri()
    )
    assert client.get_run(run.run_id).info.artifact_uri.startswith((new / "mlruns").as_uri())
    # MLflow's Default experiment (created under the working directory) now lies in the home.
    assert client.get_experiment("0").artifact_location.startswith(str(new / "mlruns"))
    assert artifact_files(client, run.run_id) == ["note.txt"]  # the copy's files are read
    with copy.run("r", run_id=run.run_id) as again:
        again.log_artifact(note, "more")
    with copy.run("new") as fresh:
        fresh.log_artifact(note)
    assert (new / "mlruns" / "exp" / run.run_id / "artifacts" / "more" / "note.txt").is_file()
    assert (new / "mlruns" / "exp" / fresh.run_id / "artifacts" / "note.txt").is_file()
    assert not old.exists()
    assert names_of(new, str(old)) == []  # vacuumed: not even in free pages
    # In place now: another process opening it finds nothing to do and changes nothing.
    db = (new / "mlflow.db").read_bytes()
    code = (
        "from pathlib import Path; from mediswift.tracking import adopt_home_store; "
        f"print(adopt_home_store(Path({str(new)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "{}" and (new / "mlflow.db").read_bytes() == db


# --- The whole pipeline --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_offline(tmp_path_factory: pytest.TempPathFactory):
    """Models are logged offline, the tokenizer's code cached under a temporary folder."""
    transformers = pytest.importorskip("transformers")
    import huggingface_hub.constants

    modules = str(tmp_path_factory.mktemp("hf_modules"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", modules)
        yield
    if modules in sys.path:
        sys.path.remove(modules)


@pytest.fixture(scope="module")
def moved(prefect_harness, hf_offline, mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny pipeline run into a home, the home moved, the pipeline run on the copy."""
    from flows.pipeline import mediswift

    root = tmp_path_factory.mktemp("relocate")
    old, new = root / "a" / "home", root / "b" / "home"
    mediswift(recipe=TINY, home=str(old), mirror=str(mirror_dir))
    runs_before = count_runs(old)
    move(old, new)
    manifests = {p: p.stat().st_mtime_ns for p in new.rglob("manifest.json")}
    out = mediswift(recipe=TINY, home=str(new), mirror=str(mirror_dir))
    return {"old": old, "new": new, "out": out, "runs": runs_before, "manifests": manifests}


def count_runs(home: Path) -> int:
    with sqlite3.connect(home / "mlflow.db") as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


pipeline = pytest.mark.slow


@pipeline
def test_a_moved_home_finds_everything_done(moved, mirror_dir: Path) -> None:
    new = moved["new"]
    arts = plan(load_recipe(TINY, mirror=str(mirror_dir)), new)
    assert all(a.done() for a in arts.values())
    assert {s: moved["out"][s] for s in arts} == {s: str(a.path) for s, a in arts.items()}
    # Nothing ran: no manifest rewritten, no MLflow run added, the old home never recreated.
    assert {p: p.stat().st_mtime_ns for p in new.rglob("manifest.json")} == moved["manifests"]
    assert count_runs(new) == moved["runs"]
    assert not moved["old"].exists()


@pipeline
def test_stores_caches_and_specs_of_a_moved_home_name_no_old_path(moved) -> None:
    """Prefect's cache records, unit specs and stage manifests never name the home; MLflow's
    store does (absolute locations) until it is first opened from the copy."""
    old, new = moved["old"], moved["new"]
    assert list((new / "prefect-cache").glob("pretrain-*.json"))
    assert list((new / "finetune" / "units").glob("*/spec.json"))
    offenders = [f for f in names_of(new, str(old)) if not _variant_record(f)]
    assert all(f == "mlflow.db" or Path(f).name == "MLmodel" for f in offenders), offenders
    adopt_home_store(new)  # what opening the store for any logging does first
    assert [f for f in names_of(new, str(old)) if not _variant_record(f)] == []


@pipeline
def test_no_file_of_a_moved_home_names_the_old_path(moved) -> None:
    assert names_of(moved["new"], str(moved["old"])) == []


def _variant_record(rel: str) -> bool:
    parts = Path(rel).parts
    return parts[:2] == ("pretrain", "units") and parts[-1] == "manifest.json"


@pipeline
def test_a_moved_home_writes_into_the_copy(moved, mirror_dir: Path) -> None:
    """Pretrain made to run again (its variants come from the cache records, its models are
    found registered) and evaluate forced: new artifacts and aliases, all in the copy."""
    import mlflow

    from flows.pipeline import mediswift

    old, new = moved["old"], moved["new"]
    cfg = load_recipe(TINY, mirror=str(mirror_dir))
    arts = plan(cfg, new)
    finals = {p: p.stat().st_mtime_ns for p in (new / "pretrain" / "units").rglob("final/*")}
    arts["pretrain"].manifest_path.unlink()
    files_before = set((new / "mlruns").rglob("*"))
    mediswift(
        recipe=TINY,
        home=str(new),
        mirror=str(mirror_dir),
        stages=["pretrain", "evaluate"],
        force=["evaluate"],
    )
    assert arts["pretrain"].done() and arts["evaluate"].done()
    assert {p: p.stat().st_mtime_ns for p in finals} == finals  # no variant retrained
    client = MlflowClient(default_tracking_uri(new))
    mlruns = (new / "mlruns").as_uri()
    evaluate = client.get_run(arts["evaluate"].manifest()["mlflow_run_id"])
    assert evaluate.info.artifact_uri.startswith(mlruns)
    assert artifact_files(client, evaluate.info.run_id) == ["evaluate"]
    assert set((new / "mlruns").rglob("*")) > files_before
    # Models: each found registered (one version per name), aliases on them, loadable from the
    # copy's files.
    variants = arts["pretrain"].manifest()["variants"]
    assert [v["registered_model"] for v in variants] == [
        "models:/mediswift-tiny-dense/1",
        "models:/mediswift-tiny-s75/1",
    ]
    for rm in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{rm.name}'")
        assert len(versions) == 1, rm.name
        model_id = versions[0].source.removeprefix("models:/")
        assert client.get_logged_model(model_id).artifact_location.startswith(mlruns)
    selected = client.get_model_version_by_alias("mediswift-tiny-s75-hoc", "selected")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(new))
        local = mlflow.artifacts.download_artifacts(f"models:/{selected.name}@selected")
    assert (Path(local) / "soft_prompt.safetensors").is_file()
    assert not old.exists()
    offenders = [f for f in names_of(new, str(old)) if not _variant_record(f)]
    assert offenders == []
