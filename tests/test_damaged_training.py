"""Nothing is trained on damaged data: a diverged loss stops the run, a damaged checkpoint is
set aside for the last good one, a cut manifest counts as not done."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training_fixtures import tiny_pretrain_config, tiny_variant

from mediswift.config import PretrainConfig
from mediswift.model import GPT, GPTConfig
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist
from mediswift.train.finite import FORCE_NAN_ENV, NonFiniteLoss
from mediswift.train.loop import Hooks, LoopConfig, train
from mediswift.train.optim import optimizer_for
from mediswift.train.pretrain import VARIANT_MANIFEST, run_variant
from mediswift.train.synthetic import SyntheticTokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, block_size=32))


def test_nan_loss_stops_the_loop_before_the_next_checkpoint(monkeypatch) -> None:
    monkeypatch.setenv(FORCE_NAN_ENV, "2")
    model = tiny()
    opt = optimizer_for(model, PretrainConfig(lr=1e-3))
    cfg = LoopConfig.from_settings(PretrainConfig(steps=8, lr=1e-3), name="tiny-s0")
    cfg = replace(cfg, log_every=100, eval_every=100, checkpoint_every=4)
    saved: list[int] = []
    with pytest.raises(NonFiniteLoss, match=r"tiny-s0: training loss .* at step 2\b"):
        train(model, opt, iter(SyntheticTokens(64, 16, 4)), cfg, Dist(), hooks=_saves(saved))
    assert saved == []  # step 4's checkpoint would hold the diverged weights


def test_an_overflowed_weight_is_caught_without_the_hook() -> None:
    model = tiny()
    with torch.no_grad():
        model.h[0].mlp.fc.weight.fill_(float("inf"))  # what an overflow leaves behind
    opt = optimizer_for(model, PretrainConfig(lr=1e-3))
    cfg = replace(LoopConfig.from_settings(PretrainConfig(steps=3, lr=1e-3)), log_every=1)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        train(model, opt, iter(SyntheticTokens(64, 16, 4)), cfg, Dist())


def _saves(into: list[int]) -> Hooks:
    return Hooks(checkpoint=lambda st: into.append(st.step))


def test_a_diverged_variant_raises_and_is_not_done(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(FORCE_NAN_ENV, "5")
    out = tmp_path / "v"
    spec = tiny_variant(out, tiny_pretrain_config(log_every=10), name="tiny-nan")
    with pytest.raises(NonFiniteLoss, match=r"tiny-nan: .* at step 5\b"):
        run_variant(spec)
    assert not (out / VARIANT_MANIFEST).exists() and not (out / "final").exists()
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_00000003"]


def test_the_report_shows_a_missing_loss(tmp_path: Path) -> None:
    from mediswift.artifacts import Artifact
    from mediswift.report import pretrain_section

    art = Artifact("pretrain", "k", tmp_path).ensure()
    variant = {"name": "tiny-s0", "model": "tiny", "sparsity": 0.0, "train_flops": 1.0}
    art.write_manifest({"variants": [variant | {"final_train_loss": None}]})
    table = pretrain_section({"pretrain": art})
    assert "| tiny-s0 |" in table and table.count("missing") == 2


def _truncate(folder: Path) -> None:
    f = folder / ckpt.MODEL_FILE
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_a_bit(folder: Path) -> None:
    f = folder / ckpt.TRAIN_TENSORS_FILE  # past the header: safetensors still loads it
    data = bytearray(f.read_bytes())
    data[-100] ^= 0x10
    f.write_bytes(bytes(data))


def _truncate_without_digests(folder: Path) -> None:
    (folder / ckpt.DIGESTS_FILE).unlink()  # as written before digests: the loader finds it
    _truncate(folder)


@pytest.mark.parametrize("damage", [_truncate, _flip_a_bit, _truncate_without_digests])
def test_resume_sets_a_damaged_checkpoint_aside_for_the_last_good_one(
    tmp_path: Path, capsys, damage
) -> None:
    out = tmp_path / "v"
    spec = tiny_variant(out, tiny_pretrain_config())
    run_variant(spec)
    trained = ckpt.read_weights(out / "final")
    newest = ckpt.latest_checkpoint(out / "checkpoints")
    assert newest is not None and newest.name == "step_00000006"
    damage(newest)
    (out / VARIANT_MANIFEST).unlink()  # the unit runs again
    capsys.readouterr()
    record = run_variant(spec)
    said = capsys.readouterr().out.splitlines()
    aside = [line for line in said if "damaged checkpoint" in line]
    assert len(aside) == 1 and "step_00000006.bad-1" in aside[0], said
    assert str(newest / ckpt.MODEL_FILE) in aside[0] or ckpt.TRAIN_TENSORS_FILE in aside[0]
    assert any("resuming from" in line and "step_00000003" in line for line in said), said
    assert (out / "checkpoints" / "step_00000006.bad-1").is_dir() and record["steps"] == 6
    again = ckpt.read_weights(out / "final")  # steps 4-6 trained again, to the same weights
    assert all(torch.equal(trained[k], again[k]) for k in trained)


def test_a_cut_manifest_counts_as_not_done_with_one_warning(tmp_path: Path, caplog) -> None:
    from mediswift.artifacts import Artifact

    art = Artifact("stage", "k", tmp_path / "unit").ensure()
    whole = art.manifest_path
    art.write_manifest({"files": list(range(40))})
    whole.write_text(whole.read_text()[: len(whole.read_text()) // 2])
    caplog.set_level("WARNING", logger="mediswift.artifacts")
    assert not art.done() and not art.done()
    with pytest.raises(FileNotFoundError, match="not complete"):
        art.manifest()
    named = [r.getMessage() for r in caplog.records if str(whole) in r.getMessage()]
    assert len(named) == 1 and "not done" in named[0], caplog.records
    art.write_manifest({"files": []})  # the unit ran again
    assert art.done() and art.manifest()["files"] == []


def test_a_variant_with_a_cut_manifest_runs_again(tmp_path: Path) -> None:
    out = tmp_path / "v"
    spec = tiny_variant(out, tiny_pretrain_config())
    first = run_variant(spec)
    record = out / VARIANT_MANIFEST
    record.write_text(record.read_text()[:40])
    again = run_variant(spec)  # resumes from its last checkpoint and writes the record anew
    assert again["final_val_loss"] == first["final_val_loss"]
    assert json.loads(record.read_text())["steps"] == 6
