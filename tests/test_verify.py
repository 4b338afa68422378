"""`mediswift verify`: a whole home checked against what its writers recorded, nothing moved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_damaged_training import _cut, _flip_bit, _shard_home
from training_fixtures import tiny_pretrain_config, tiny_variant

from mediswift.train import checkpoint as ckpt
from mediswift.train.pretrain import run_variant
from mediswift.verify import main, verify_home

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def home(tmp_path: Path, mirror_dir: Path) -> dict:
    h = _shard_home(tmp_path, mirror_dir)
    out = h["home"] / "pretrain" / "units" / "k0"
    run_variant(tiny_variant(out, tiny_pretrain_config()))
    return {**h, "variant": out}


def test_a_whole_home_verifies(home: dict, capsys) -> None:
    assert main(home["home"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and "nothing damaged" in said[0], said
    report = verify_home(home["home"])
    assert report.damaged == [] and report.checked > 10


def test_every_damaged_file_is_named_once_and_nothing_moves(home: dict, capsys) -> None:
    h = home["home"]
    token = home["shards"]["train"]
    _flip_bit(token)
    _cut(home["doc_shard"])
    newest = ckpt.latest_checkpoint(home["variant"] / "checkpoints")
    assert newest is not None
    _cut(newest / ckpt.MODEL_FILE)
    final = home["variant"] / "final" / ckpt.MODEL_FILE
    _flip_bit(final)
    manifest = home["stage"].manifest_path
    manifest.write_text(manifest.read_text()[:30])
    before = sorted(p for p in h.rglob("*"))
    assert main(h) == 1
    said = capsys.readouterr().out.splitlines()
    assert sorted(p for p in h.rglob("*")) == before  # verify changes nothing
    damaged = said[:-1]
    for f in (token, home["doc_shard"], newest / ckpt.MODEL_FILE, final, manifest):
        named = [line for line in damaged if line.startswith(f"{f}: ")]
        assert len(named) == 1, (f, said)
    assert len(damaged) == 5, said
    assert said[-1].startswith("verify: 5 damaged")
    assert any("makes the tokenize unit t0 again" in line for line in damaged)
    assert any(f"sets checkpoint {newest.name} aside" in line for line in damaged)
    assert any("runs the tokenize stage (s0) again" in line for line in damaged)


def test_a_missing_listed_shard_is_damage(home: dict) -> None:
    val = home["shards"]["validation"]
    val.unlink()
    lines = [d.line() for d in verify_home(home["home"]).damaged]
    # Its sidecar, its unit's and its stage's manifests all miss it: one line.
    assert len(lines) == 1 and lines[0].startswith(f"{val}: missing"), lines


@pytest.mark.subprocess
def test_the_command(home: dict) -> None:
    cmd = [sys.executable, "-m", "mediswift.cli", "verify", "--home", str(home["home"])]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "nothing damaged" in ok.stdout, ok.stderr
    _flip_bit(home["shards"]["train"])
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    assert bad.stdout.splitlines()[0].startswith(f"{home['shards']['train']}: sha256 differs")


def test_a_raw_copy_whose_md5_changed_is_damage(tmp_path: Path, mirror_dir: Path) -> None:
    import hashlib
    import shutil

    from mediswift.artifacts import unit_at

    home = tmp_path / "home"
    rel = "raw/pubmed/baseline/pubmed26n0001.xml.gz"
    (home / rel).parent.mkdir(parents=True)
    shutil.copyfile(mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz", home / rel)
    md5 = hashlib.md5((home / rel).read_bytes()).hexdigest()
    unit_at(home, "download", "u0").ensure().write_manifest({"path": rel, "md5": md5})
    assert verify_home(home).damaged == []
    _flip_bit(home / rel)
    [damage] = verify_home(home).damaged
    assert damage.line().startswith(f"{home / rel}: md5 ") and "fetches it again" in damage.line()
