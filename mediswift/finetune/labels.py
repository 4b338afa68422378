"""Pseudo labels: a labeller model labels an unlabelled split (a labels unit, `point.run_labels`)
into `labels.jsonl`, and a stage that trains on them reads them back by example id."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from mediswift.finetune.formats import label_from_json, label_to_json
from mediswift.finetune.scoring import Encoded, TokenizerLike, predict
from mediswift.model.soft_prompt import PromptedLM

LABELS_FILE = "labels.jsonl"


def pseudo_label(
    model: PromptedLM,
    task: Any,
    tok: TokenizerLike,
    data: list[Encoded],
    batch_size: int,
) -> tuple[list[Encoded], dict[str, int]]:
    """Label unlabelled examples with the model as it stands (constrained scoring when the task
    has it: every item gets a valid label), as a labels unit labels PQA-U with its labeller
    (`run_labels`). Returns the labelled examples and the label counts."""
    mode = "score" if "score" in task.modes else "generate"
    preds, _ = predict(model, task, tok, data, mode, batch_size)
    out, counts = [], Counter()
    for e, p in zip(data, preds, strict=True):
        if p is None:
            continue  # a generation that names no label teaches nothing
        counts[json.dumps(label_to_json(p))] += 1
        out.append(Encoded(e.id, e.source, tok.encode(task.target(p)) + [tok.eos_id], p))
    return out, dict(counts)


def apply_labels(
    task: Any, tok: TokenizerLike, data: list[Encoded], labels: dict[str, Any]
) -> tuple[list[Encoded], dict[str, int]]:
    """The unlabelled examples given the labels a labels unit predicted for them (by id);
    examples it left unlabelled are dropped. Returns them and the label counts."""
    out, counts = [], Counter()
    for e in data:
        if e.id not in labels:
            continue
        label = labels[e.id]
        counts[json.dumps(label_to_json(label))] += 1
        out.append(Encoded(e.id, e.source, tok.encode(task.target(label)) + [tok.eos_id], label))
    return out, dict(counts)


def read_labels(unit_dir: Path) -> dict[str, Any]:
    """Id -> label of a labels unit (`run_labels`)."""
    rows = (Path(unit_dir) / LABELS_FILE).read_text().splitlines()
    return {r["id"]: label_from_json(r["label"]) for r in map(json.loads, rows)}
