"""The command line as a user meets it: one line per error (exit 2 for bad settings, 1 for a
fault while running), the traceback in the run's log file, Prefect's state under the home, and
no temporary server left behind by a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": ""}
    env.pop("PREFECT_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "mediswift.cli", *args, "--home", str(home)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("sets", "names"),
    [
        (["pretrain.steps=0"], "pretrain.steps"),
        (["pretrain.global_batch=10", "pretrain.micro_batch=3"], "global_batch 10"),
        (["pretrain=1", "pretrain.steps=2"], "--set pretrain.steps"),
        (["finetune.tasks=[pubmedqa, nope]"], "unknown downstream task 'nope'"),
        (["pretrain.steps=1000000000000000000"], "pretrain.steps"),
        (["pretrain.block_size=1000000000"], "pretrain.block_size"),
        (["finetune.device=gpu7"], "finetune.device"),
        (["pretrain.stpes=5"], "unknown setting pretrain.stpes; did you mean pretrain.steps?"),
    ],
)
def test_bad_settings_one_line_exit_2(sets: list[str], names: str, tmp_path: Path) -> None:
    args = ["run", "--recipe", "demo", "--dry-run"]
    for s in sets:
        args += ["--set", s]
    r = cli(*args, home=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("mediswift: error: ")
    assert names in r.stderr and "Traceback" not in r.stderr


@pytest.mark.subprocess
def test_a_device_this_machine_lacks_is_refused_before_anything_runs(tmp_path: Path) -> None:
    r = cli("run", "--stages", "pretrain", "--set", "pretrain.device=cuda:7", home=tmp_path)
    if "CUDA is not available" not in r.stderr:  # a machine with GPUs: ask for one more
        pytest.skip("this machine has CUDA devices")
    assert r.returncode == 2 and r.stderr.startswith("mediswift: error: pretrain.device")
    assert not (tmp_path / "logs").exists()  # refused before the run started


@pytest.mark.subprocess
def test_a_home_whose_path_breaks_sqlite_urls_is_refused(tmp_path: Path) -> None:
    r = cli("run", "--dry-run", home=tmp_path / "a#b")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "'#'" in r.stderr and not (tmp_path / "a").exists()


@pytest.mark.subprocess
def test_an_alias_bomb_recipe_is_refused_at_once_even_verbose(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(levels) + "\npretrain: *a8\n")  # 9^9 strings expanded
    r = cli("run", "--recipe", str(recipe), "--dry-run", "--verbose", home=tmp_path, timeout=60)
    assert r.returncode == 2 and "alias" in r.stderr.splitlines()[-1]
    assert len(r.stderr) < 20_000


def test_version_prints_the_package_version(capsys) -> None:
    from importlib.metadata import version

    from mediswift.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mediswift {version('mediswift')}\n"


@pytest.mark.subprocess
@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_mistyped_mirror_is_refused_and_not_remembered(dry: list[str], tmp_path: Path) -> None:
    from mediswift.sources import SOURCES_FILE, remember

    remember(tmp_path, "demo", "/data/mirror")
    before = (tmp_path / SOURCES_FILE).read_text()
    typo = tmp_path / "mirrorr"
    r = cli("run", "--stages", "download", "--mirror", str(typo), *dry, home=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr == f"mediswift: error: --mirror {typo}: no such folder\n"
    assert (tmp_path / SOURCES_FILE).read_text() == before
    assert not (tmp_path / "logs").exists()  # refused before the run started


@pytest.mark.slow
def test_runtime_fault_one_line_exit_1_traceback_in_log(tmp_path: Path) -> None:
    r = cli("run", "--recipe", "tests/recipes/tiny.yaml", "--stages", "finetune", home=tmp_path)
    assert r.returncode == 1
    lines = [x for x in r.stderr.splitlines() if x.startswith("mediswift: error: ")]
    assert len(lines) == 1 and "run the 'pretrain' stage first" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    log = Path(lines[0].rsplit("(details: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text()
    # Prefect's own state lives in the home, not in the user's ~/.prefect.
    assert (tmp_path / "prefect").is_dir()


@pytest.mark.slow
def test_killed_run_leaves_no_temporary_server(mirror_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediswift.cli", "run", "--recipe", "tests/recipes/tiny.yaml",
         "--stages", "download", "--home", str(tmp_path), "--mirror", str(mirror_dir)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        server = None
        deadline = time.monotonic() + 180
        while server is None and time.monotonic() < deadline and proc.poll() is None:
            found = subprocess.run(
                ["pgrep", "-P", str(proc.pid), "-f", "uvicorn"], capture_output=True, text=True
            ).stdout.split()
            server = int(found[0]) if found else None
            time.sleep(0.2)
        assert server is not None, "the run started no temporary server"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for _ in range(100):
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(server, signal.SIGKILL)
    pytest.fail("the temporary Prefect server outlived the killed run")


@pytest.fixture()
def small_disk(tmp_path: Path):
    """An 8 MB file system (tmpfs) that can be grown in place; needs the right to mount."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_then_heals(small_disk: Path, mirror_dir: Path) -> None:
    args = ["run", "--recipe", "tests/recipes/tiny.yaml", "--mirror", str(mirror_dir)]
    args += ["--stages", "download,parse,filter,vocab,tokenize,pretrain"]
    r = cli(*args, home=small_disk / "home")
    errors = [x for x in r.stderr.splitlines() if x.startswith("mediswift: error: ")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr[-3000:]
    assert "no space left on device under" in errors[0] and str(small_disk) in errors[0]
    assert "Traceback" not in r.stderr and "Logging error" not in r.stderr, r.stderr[-3000:]
    # The progress lines, and a few of Prefect's "Error logging to API" (its store is full too).
    assert r.stderr.count("\n") < 300, r.stderr[-3000:]

    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)
    r = cli(*args, home=small_disk / "home")
    assert r.returncode == 0, r.stderr[-3000:]


def test_ui_commands_paste_for_a_home_with_spaces(tmp_path: Path, monkeypatch) -> None:
    import shlex

    from mediswift.cli import ui_commands

    home = tmp_path / "my home"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home / "prefect"))
    mlflow, _, prefect, _ = ui_commands(home).splitlines()
    words = shlex.split(mlflow.removeprefix("MLflow UI:"))
    assert words[-1] == f"sqlite:///{home / 'mlflow.db'}"
    words = shlex.split(prefect.removeprefix("Prefect UI:"))
    assert words[0] == f"PREFECT_HOME={home / 'prefect'}"
