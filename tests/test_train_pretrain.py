"""A variant end to end on token shards in the tokenize stage's format: the record the pretrain
manifest lists, the metrics a tracking run receives, the curve, the plot and the Table 2 text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mediswift.config import PretrainConfig
from mediswift.flops import flops_for
from mediswift.train import checkpoint as ckpt
from mediswift.train.pretrain import (
    VariantSpec,
    launch_variant,
    read_metrics,
    read_record,
    variant_params,
)
from mediswift.train.report import plot_loss_curves, read_curve, table2

VOCAB = 300


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_shard(path: Path, docs: list[list[int]]) -> None:
    """A token shard as the manifests define it: doc_id, input_ids list<uint16>, n_tokens."""
    table = pa.table(
        {
            "doc_id": pa.array([f"pmid:{i}" for i in range(len(docs))], pa.string()),
            "input_ids": pa.array(docs, pa.list_(pa.uint16())),
            "n_tokens": pa.array([len(d) for d in docs], pa.int32()),
        }
    )
    pq.write_table(table, path)


def make_shards(root: Path) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)

    def doc() -> list[int]:  # a repetitive "language": short motifs, so the loss can fall
        motif = rng.integers(3, VOCAB, size=int(rng.integers(3, 6)))
        return [1, *np.tile(motif, int(rng.integers(5, 20))).tolist(), 2]

    paths = {"train": [], "validation": []}
    for split, n_shards, n_docs in (("train", 2, 120), ("validation", 1, 30)):
        for i in range(n_shards):
            p = root / f"{split}-{i:05d}.parquet"
            write_shard(p, [doc() for _ in range(n_docs)])
            paths[split].append(str(p))
    return paths["train"], paths["validation"]


class ListSink:
    """An in-memory metric sink (what an MLflow run logger receives)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.flushes = 0

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def flush(self) -> None:
        self.flushes += 1


@pytest.mark.subprocess
def test_variant_on_token_shards(tmp_path: Path) -> None:
    train, val = make_shards(tmp_path / "tokens")
    cfg = PretrainConfig(
        model="tiny",
        seq_len=32,
        block_size=64,
        global_batch=8,
        micro_batch=4,
        steps=30,
        lr=3e-3,
        log_every=5,
        eval_every=15,
        eval_batches=2,
        checkpoint_every=15,
        measure_peak=True,
    )
    spec = VariantSpec(
        name="tiny-s75",
        config=cfg.model_dump(mode="json"),
        sparsity=0.75,
        vocab_size=VOCAB,
        out_dir=str(tmp_path / "variant"),
        train_shards=train,
        val_shards=val,
    )
    sink = ListSink()
    rec = launch_variant(spec, nproc=1, sink=sink)

    keys = {
        "name",
        "model",
        "sparsity",
        "method",
        "checkpoint",
        "total_params",
        "non_embedding_params",
        "active_params",
        "active_non_embedding_params",
        "train_flops",
        "flops_ratio",
        "final_train_loss",
        "final_val_loss",
        "val_ppl",
        "tokens",
        "steps",
        "loss_curve",
        "checkpoint_bytes",
        "resume_checkpoint_bytes",
    }
    assert keys <= set(rec)
    assert rec["steps"] == 30 and rec["tokens"] == 30 * 8 * 32 and rec["method"] == "static"
    assert rec["val_ppl"] == pytest.approx(math.exp(rec["final_val_loss"]))
    assert rec["train_flops"] == pytest.approx(flops_for("tiny", 0.75, rec["tokens"], VOCAB, 32))
    assert 0 < rec["flops_ratio"] < 1
    params = variant_params(spec)
    assert params["active_non_embedding_params"] == rec["active_non_embedding_params"]

    model = ckpt.load_model(rec["checkpoint"])
    masks = ckpt.load_masks(rec["checkpoint"])
    assert len(masks) == 6 * model.config.n_layer
    weights = dict(model.named_parameters())
    assert all(torch.all(weights[n][~m] == 0) for n, m in masks.items())

    logged = {k for _, m in sink.rows for k in m}
    assert {
        "train_loss",
        "val_loss",
        "val_ppl",
        "lr",
        "tokens_per_s",
        "flops_per_s",
        "mfu",
    } <= logged
    assert sink.flushes >= 2
    on_disk = read_metrics(Path(spec.out_dir) / "metrics.jsonl")
    assert [s for s, _ in on_disk] == [s for s, _ in sink.rows]

    curve = read_curve(Path(rec["loss_curve"]))
    assert [r["step"] for r in curve] == [5, 10, 15, 20, 25, 30]
    assert curve[2]["val_loss"] is not None and curve[0]["val_loss"] is None
    assert curve[-1]["train_loss"] < curve[0]["train_loss"] - 0.3  # it is learning the motifs

    png = plot_loss_curves({"tiny-s75": Path(rec["loss_curve"])}, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table2([rec])
    assert "tiny-s75" in text and f"{rec['flops_ratio']:.2f}x" in text

    # A second call finds the record and trains nothing.
    again = launch_variant(spec, nproc=1)
    assert again == read_record(Path(spec.out_dir))  # the stored record, paths resolved
