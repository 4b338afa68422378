"""The fault matrix: a real `mediswift run` killed with SIGKILL at a random point inside every
stage, download through evaluate, then run to the end; its outputs equal an uninterrupted run's.

All runs share one Prefect server started here (so each run starts in seconds); each run is a
separate process, killed mid-stage once its log says the stage started (plus a seeded random
delay). What must hold: every stage key is the same, and every output that does not carry a
clock or a run id (shards, tokenizer, checkpoints, metrics, tables) is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import server_fixtures

from flows.registry import plan, stage_names
from mediswift.config import load_recipe
from mediswift.overrides import parse_set

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "recipes" / "tiny.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    with server_fixtures.prefect_server(tmp_path_factory.mktemp("prefect")) as url:
        yield url


def _start(home: Path, mirror: Path, api: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api}
    return subprocess.Popen(
        [sys.executable, "-m", "mediswift.cli", "run", "--recipe", TINY,
         "--home", str(home), "--mirror", str(mirror)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
    )  # fmt: skip


def _units(home: Path, stage: str) -> set[Path]:
    return set((home / stage / "units").glob("*/manifest.json"))


def _kill_inside(
    stage: str, proc: subprocess.Popen, log: Path, home: Path, rng: random.Random, arts: dict
) -> bool:
    """SIGKILL `proc` inside `stage`: right after it starts, or just after its first unit is
    done (the stage itself not yet), chosen at random. False if the stage was not interrupted
    (it was done already, or finished before the kill)."""
    deadline = time.monotonic() + 600
    while f"{stage}: running into" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.wait()
            return False
        time.sleep(0.02)
    before = _units(home, stage)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 0.2))
    else:
        while not _units(home, stage) - before and proc.poll() is None:
            time.sleep(0.02)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return not arts[stage].done()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _outputs(home: Path, mirror: Path) -> dict[str, str]:
    """Every clock-free output of the recipe's stages: path (relative) -> content digest."""
    arts = plan(load_recipe(TINY, mirror=str(mirror)), home)
    out: dict[str, str] = {s: arts[s].key for s in stage_names()}
    for stage in ("parse", "filter", "tokenize"):
        for shard in arts[stage].manifest()["shards"]:
            out[shard["path"]] = _digest(home / shard["path"])
    for f in sorted(arts["vocab"].path.iterdir()):
        if f.name != "manifest.json" and not f.name.startswith("."):
            out[f"vocab/{f.name}"] = _digest(f)
    for v in arts["pretrain"].manifest()["variants"]:
        out[v["checkpoint"]] = _digest(home / v["checkpoint"] / "model.safetensors")
    for sweep in arts["finetune"].manifest()["sweeps"]:
        for p in sweep["points"]:
            out[p["unit"]] = json.dumps(p["metrics"], sort_keys=True)
    for task, files in arts["evaluate"].manifest()["tables"].items():
        out[f"table/{task}"] = _digest(arts["evaluate"].path / files["csv"])
    return out


@pytest.fixture(scope="module")
def reference(
    prefect_server: str, mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The home of one uninterrupted run of every stage: what the killed runs must end with,
    and (copied: homes are relocatable) the finished data stages the stop tests start from."""
    tmp = tmp_path_factory.mktemp("reference")
    log = tmp / "reference.log"
    ref = _start(tmp / "home", mirror_dir, prefect_server, log)
    assert ref.wait(timeout=900) == 0, log.read_text()[-3000:]
    return tmp / "home"


def test_kill_in_every_stage_then_finish_equals_an_uninterrupted_run(
    prefect_server: str, mirror_dir: Path, tmp_path: Path, reference: Path
) -> None:

    home, rng = tmp_path / "killed", random.Random(7)
    arts = plan(load_recipe(TINY, mirror=str(mirror_dir)), home)
    killed = []
    for i, stage in enumerate(stage_names()):
        log = tmp_path / f"kill-{i}-{stage}.log"
        proc = _start(home, mirror_dir, prefect_server, log)
        if _kill_inside(stage, proc, log, home, rng, arts):
            killed.append(stage)
    final_log = tmp_path / "final.log"
    final = _start(home, mirror_dir, prefect_server, final_log)
    assert final.wait(timeout=900) == 0, final_log.read_text()[-3000:]

    logs = "".join(p.read_text(errors="replace")[-1500:] for p in sorted(tmp_path.glob("*.log")))
    assert len(killed) >= 6, f"killed only inside {killed}: {logs}"  # a stage may be too fast
    assert _outputs(home, mirror_dir) == _outputs(reference, mirror_dir)
    # Nothing half-written is read as done: the outputs above equal the reference's. (Temporary
    # files of killed writers in a stage that later completes are only swept the next time that
    # stage runs.)


# --- Stopping on request: Ctrl-C and SIGTERM ---------------------------------------------------

# Long enough to be stopped twice mid-training (after the checkpoints at 50 and 100 steps), and
# no longer: the steps are most of the test's time (14.5 steps/s with these sparse evaluations and
# logs, 12.5 with the tiny recipe's every 6 and 2 steps). Only the dense variant: both stops
# land in the first variant trained, so a second one would only be trained, never stopped.
LONGER = [
    "--set", "pretrain.steps=150", "--set", "pretrain.checkpoint_every=50",
    "--set", "pretrain.eval_every=50", "--set", "pretrain.log_every=10",
    "--set", "pretrain.sparsity_levels=[0.0]",
]  # fmt: skip


def _run(home: Path, mirror: Path, api: str, log: Path, *extra: str) -> subprocess.Popen:
    """`mediswift run` in a session of its own: its process group is what a terminal's Ctrl-C
    reaches (the CLI, and any child that did not leave the group)."""
    env = {**os.environ, "PREFECT_API_URL": api}
    return subprocess.Popen(
        [sys.executable, "-m", "mediswift.cli", "run", "--recipe", TINY,
         "--home", str(home), "--mirror", str(mirror), *extra],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
        start_new_session=True,
    )  # fmt: skip


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _checkpoints(home: Path) -> set[Path]:
    return set((home / "pretrain" / "units").glob("*/checkpoints/step_*"))


def _stop_when_training(proc: subprocess.Popen, home: Path, sig: int, whole_group: bool) -> float:
    """Send `sig` once a new pre-training checkpoint appears; returns seconds to exit."""
    import psutil

    before, deadline = _checkpoints(home), time.monotonic() + 600
    while not _checkpoints(home) - before:
        assert proc.poll() is None and time.monotonic() < deadline, "pre-training never started"
        time.sleep(0.05)
    children = _descendants(proc.pid)
    t0 = time.monotonic()
    os.killpg(proc.pid, sig) if whole_group else proc.send_signal(sig)
    proc.wait(timeout=60)
    took = time.monotonic() - t0
    time.sleep(1)  # what was killed with the run has been reaped by now
    left = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not left, f"processes of the run left after {sig}: {left}"
    return took


def _metric_steps(home: Path) -> dict[str, list[int]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    out = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            for key in run.data.metrics:
                history = client.get_metric_history(run.info.run_id, key)
                out[f"{run.info.run_name}/{run.info.run_id}/{key}"] = [m.step for m in history]
    return out


def test_ctrl_c_and_sigterm_stop_within_seconds_and_the_rerun_resumes(
    prefect_server: str, mirror_dir: Path, tmp_path: Path, reference: Path
) -> None:
    """SIGINT to the run's process group (a terminal's Ctrl-C), then SIGTERM to the CLI alone
    (a service manager), both during pre-training: each stops the run within 30 s with 130 /
    143 and leaves no process behind; the run then finishes with the weights of an
    uninterrupted run and no metric logged twice at one step."""
    ref, home = tmp_path / "reference", tmp_path / "stopped"
    shutil.copytree(reference, ref)  # homes are relocatable: the data stages need not run again
    shutil.copytree(reference, home)
    log = tmp_path / "reference.log"
    proc = _run(ref, mirror_dir, prefect_server, log, "--stages", "pretrain", *LONGER)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]

    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        log = tmp_path / f"{sig.name}.log"
        proc = _run(home, mirror_dir, prefect_server, log, "--stages", "pretrain", *LONGER)
        took = _stop_when_training(proc, home, sig, whole_group=sig == signal.SIGINT)
        err = log.read_text(errors="replace")
        assert proc.returncode == status, err[-3000:]
        assert took < 30, f"{sig.name}: exited after {took:.0f} s"
        assert f"mediswift: interrupted ({sig.name})" in err and "Traceback" not in err, err
    log = tmp_path / "final.log"
    proc = _run(home, mirror_dir, prefect_server, log, "--stages", "pretrain", *LONGER)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]

    cfg = load_recipe(TINY, parse_set(LONGER[1::2]), str(mirror_dir))
    digests = {}
    for h in (ref, home):
        variants = plan(cfg, h)["pretrain"].manifest()["variants"]
        digests[h] = {
            v["name"]: _digest(h / v["checkpoint"] / "model.safetensors") for v in variants
        }
    assert digests[home] == digests[ref]
    steps = _metric_steps(home)
    longer = int(LONGER[1].split("=")[1])  # the stopped and resumed run's steps
    dense = [
        s for k, s in steps.items() if k.startswith("tiny-dense/") and k.endswith("/train_loss")
    ]
    assert any(s and max(s) == longer for s in dense), steps.keys()
    repeated = {k: s for k, s in steps.items() if len(s) != len(set(s))}
    assert not repeated, repeated


# --- Damaged token shards: named, set aside, made again, trained on whole ------------------------

# A pre-training the reference has not done (another seed, one variant): it reads the shards.
RESEED = ["--stages", "tokenize,pretrain", "--set", "pretrain.seed=5",
          "--set", "pretrain.sparsity_levels=[0.0]"]  # fmt: skip


def _damage_token_shard(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 3] ^= 0x04  # inside a data page: Parquet itself decodes it
    else:
        del data[len(data) - 64 :]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_token_shard_is_named_remade_and_trained_on_good_data(
    prefect_server: str, mirror_dir: Path, tmp_path: Path, reference: Path, how: str
) -> None:
    clean, home = tmp_path / "clean", tmp_path / "damaged"
    shutil.copytree(reference, clean)
    shutil.copytree(reference, home)
    log = tmp_path / "clean.log"
    proc = _run(clean, mirror_dir, prefect_server, log, *RESEED)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]

    cfg = load_recipe(TINY, parse_set(RESEED[3::2]), str(mirror_dir))
    shards = plan(cfg, home)["tokenize"].manifest()["shards"]
    shard = home / next(s["path"] for s in shards if s["split"] == "train")
    good = shard.read_bytes()
    _damage_token_shard(shard, how)
    log = tmp_path / "damaged.log"
    proc = _run(home, mirror_dir, prefect_server, log, *RESEED)
    assert proc.wait(timeout=900) == 1, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if "mediswift: error:" in line]
    assert len(errors) == 1, errors
    assert f"{shard}: damaged token shard" in errors[0], f"not named: {errors[0]}"
    assert not shard.exists() and (home / "quarantine" / shard.relative_to(home)).is_file()

    log = tmp_path / "healed.log"
    proc = _run(home, mirror_dir, prefect_server, log, *RESEED)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert shard.read_bytes() == good  # made again from its document shard
    trained = {}
    for h in (clean, home):
        variants = plan(cfg, h)["pretrain"].manifest()["variants"]
        trained[h] = {
            v["name"]: _digest(h / v["checkpoint"] / "model.safetensors") for v in variants
        }
    assert trained[home] == trained[clean]  # the same weights as a run on undamaged shards


# --- Damaged raw copies heal by default ----------------------------------------------------------

# Parse units keyed anew (another shard size): the parse stage reads the raw files again.
RESHARD = ["--stages", "download,parse", "--set", "parse.rows_per_shard=40000"]


def test_a_raw_pubmed_copy_with_flipped_bytes_is_named_fetched_again_and_parsed(
    prefect_server: str, mirror_dir: Path, tmp_path: Path, reference: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(reference, home)
    raw = sorted((home / "raw" / "pubmed").rglob("*.xml.gz"))[0]
    good = raw.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01
    raw.write_bytes(bytes(data))
    log = tmp_path / "damaged.log"
    proc = _run(home, mirror_dir, prefect_server, log, *RESHARD)
    assert proc.wait(timeout=900) == 1, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if "mediswift: error:" in line]
    assert len(errors) == 1, errors
    assert f"{raw}: md5 " in errors[0] and "the next run fetches it again" in errors[0], errors[0]
    assert not raw.exists() and (home / "quarantine" / raw.relative_to(home)).is_file()

    log = tmp_path / "healed.log"
    proc = _run(home, mirror_dir, prefect_server, log, *RESHARD)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert raw.read_bytes() == good  # fetched again from the mirror
