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
from mediswift.train.pretrain import VARIANT_MANIFEST, VariantSpec, run_variant
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
    from mediswift.report_sections import pretrain_section

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


# ---- token and document shards: digests recorded by their writers, checked by their readers --


def _shard_home(tmp_path: Path, mirror_dir: Path) -> dict:
    """A home with one filter document shard, a vocabulary, and a done tokenize unit and stage
    (library calls, in the layout the stages use)."""
    import pyarrow as pa

    from mediswift.artifacts import Artifact, unit_at
    from mediswift.data.shards import FILTERED_SCHEMA, ShardWriter
    from mediswift.text.token_shards import tokenize_unit
    from mediswift.text.vocab import build_vocab

    home = tmp_path / "home"
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(300), f, strict=False)]
    n = len(rows)
    table = pa.table(
        {
            "doc_id": [r["id"] for r in rows],
            "source": ["corpus:biomed_text"] * n,
            "title": [r.get("title") or "" for r in rows],
            "text": [r["text"] for r in rows],
            "pub_types": [[] for _ in rows],
            "split": ["validation" if i % 10 == 0 else "train" for i in range(n)],
        }
    )
    doc_unit = unit_at(home, "filter", "f0").ensure()
    doc_shard = doc_unit.path / "docs-00000.parquet"
    with ShardWriter(doc_shard, FILTERED_SCHEMA) as w:
        w.write(_filtered(table, FILTERED_SCHEMA))
    doc_unit.write_manifest({"path": str(doc_shard.relative_to(home))})
    Artifact("filter", "s0", home / "filter" / "s0").ensure().write_manifest(
        {"shards": [{"path": str(doc_shard.relative_to(home))}]}
    )
    vocab = home / "vocab" / "v0"
    build_vocab(
        [doc_shard], vocab, vocab_size=300, sample_sentences=5000, seed=0, character_coverage=1.0
    )
    unit = unit_at(home, "tokenize", "t0")
    manifest = tokenize_unit(doc_shard, vocab, unit, home)
    stage = Artifact("tokenize", "s0", home / "tokenize" / "s0").ensure()
    stage.write_manifest({"shards": manifest["shards"]})
    shards = {s["split"]: home / s["path"] for s in manifest["shards"]}
    return dict(home=home, doc_shard=doc_shard, vocab=vocab, unit=unit, stage=stage,
                shards=shards, vocab_size=manifest["vocab_size"])  # fmt: skip


def _filtered(table, schema):
    import pyarrow as pa

    cols = {f.name: table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema}  # fmt: skip
    return pa.table(cols, schema=schema)


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x04  # inside a data page: Parquet's reader does not notice
    path.write_bytes(bytes(data))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 100])


@pytest.mark.parametrize("damage", [_flip_bit, _cut])
def test_a_damaged_token_shard_is_named_set_aside_remade_and_trained_on_whole(
    tmp_path: Path, mirror_dir: Path, damage
) -> None:
    from mediswift.digests import DamagedFile, sidecar
    from mediswift.text.token_shards import tokenize_unit
    from mediswift.train.batches import TokenBatches

    h = _shard_home(tmp_path, mirror_dir)
    home, train = h["home"], h["shards"]["train"]
    good = train.read_bytes()
    assert sidecar(train).is_file()
    expected = [
        b.clone() for b, _ in zip(TokenBatches([train], 16, 4, seed=1), range(5), strict=False)
    ]
    damage(train)
    cfg = tiny_pretrain_config()
    spec = VariantSpec(
        name="tiny-s50",
        config=cfg.model_dump(mode="json"),
        sparsity=0.5,
        vocab_size=h["vocab_size"],
        out_dir=str(tmp_path / "v"),
        data="shards",
        train_shards=[str(train)],
        val_shards=[str(h["shards"]["validation"])],
    )
    with pytest.raises(DamagedFile) as err:
        run_variant(spec)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{train}: damaged token shard"), line
    assert "quarantine" in line and "the next run makes it again" in line
    assert not train.exists() and (home / "quarantine" / train.relative_to(home)).is_file()
    assert not h["unit"].done() and not h["stage"].done()  # the unit and its stage run again
    assert not (tmp_path / "v" / VARIANT_MANIFEST).exists()
    # A retry within the run (the task's) says the same, not "no such file".
    with pytest.raises(DamagedFile, match=r"damaged token shard: set aside to .* earlier"):
        run_variant(spec)
    # The next run's tokenize stage makes the unit again: the same bytes as before.
    tokenize_unit(h["doc_shard"], h["vocab"], h["unit"], home)
    assert h["unit"].done() and train.read_bytes() == good
    again = [b for b, _ in zip(TokenBatches([train], 16, 4, seed=1), range(5), strict=False)]
    assert all(torch.equal(a, b) for a, b in zip(expected, again, strict=True))
    assert run_variant(spec)["steps"] == cfg.steps


def test_a_done_tokenize_unit_with_a_damaged_shard_is_made_again(
    tmp_path: Path, mirror_dir: Path, caplog
) -> None:
    from mediswift.text.token_shards import tokenize_unit

    h = _shard_home(tmp_path, mirror_dir)
    val = h["shards"]["validation"]
    good = val.read_bytes()
    _flip_bit(val)
    caplog.set_level("WARNING")
    manifest = tokenize_unit(h["doc_shard"], h["vocab"], h["unit"], h["home"])
    assert val.read_bytes() == good and h["unit"].done()
    assert [s["path"] for s in manifest["shards"]] == [
        str(p.relative_to(h["home"])) for p in h["shards"].values()
    ]
    assert any(str(val) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_a_damaged_document_shard_is_named_and_its_filter_unit_not_done(
    tmp_path: Path, mirror_dir: Path
) -> None:
    from mediswift.artifacts import unit_at
    from mediswift.data.shards import iter_batches
    from mediswift.digests import DamagedFile
    from mediswift.text.token_shards import tokenize_unit

    h = _shard_home(tmp_path, mirror_dir)
    doc = h["doc_shard"]
    _flip_bit(doc)
    (h["unit"].manifest_path).unlink()  # the tokenize unit runs again and reads the shard
    with pytest.raises(DamagedFile, match=r"damaged document shard: sha256 differs"):
        tokenize_unit(doc, h["vocab"], h["unit"], h["home"])
    assert not doc.exists() and not unit_at(h["home"], "filter", "f0").done()
    assert not (h["home"] / "filter" / "s0" / "manifest.json").exists()
    with pytest.raises(DamagedFile, match="damaged document shard: set aside to .* earlier"):
        next(iter_batches(doc))  # a second reader of the run says so too
