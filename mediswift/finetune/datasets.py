"""Task data for fine-tuning, prepared once per task and shared by every grid point.

`prepare_task` reads the raw files the download stage put under `<home>/raw` (PubMedQA,
HoC), builds the official splits, applies the optional example caps (a seeded random subset,
never "the first n": the PQA-L splits are ordered by label), and writes one JSONL file per
split plus `data.json` (counts and the majority-class baseline). For PubMedQA with PQA-A /
PQA-U sources it also writes the earlier stages of the multi-stage schedule (Appendix A.2).
Given the tokenizer, it also keeps every example's source and target token ids
(`<split>.ids.jsonl`, untruncated), so that grid points do not tokenize the same texts again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediswift.artifacts import write_atomic
from mediswift.config import FinetuneConfig
from mediswift.finetune.formats import (
    Example,
    TaskFormat,
    label_to_json,
    read_examples,
    write_examples,
)
from mediswift.finetune.hoc import HoC, hoc_splits
from mediswift.finetune.pubmedqa import PubMedQA, pqaa_splits, pqal_splits, pqau_examples

TASKS: dict[str, Callable[[], TaskFormat]] = {"pubmedqa": PubMedQA, "hoc": HoC}
DATA_FILE = "data.json"


def task_format(name: str) -> TaskFormat:
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown fine-tuning task {name!r}; known: {', '.join(TASKS)}") from None


def n_prompt(cfg: FinetuneConfig, task: str) -> int:
    return cfg.pubmedqa_prompt_tokens if task == "pubmedqa" else cfg.hoc_prompt_tokens


def epochs(cfg: FinetuneConfig, task: str) -> int:
    return cfg.pubmedqa_epochs if task == "pubmedqa" else cfg.hoc_epochs


def subsample(examples: list[Example], cap: int | None, seed: int = 0) -> list[Example]:
    """At most `cap` examples: a seeded random subset kept in the original order."""
    if cap is None or len(examples) <= cap:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), cap))
    return [examples[i] for i in keep]


def prepare_task(
    task: str,
    raw: dict[str, Path],
    cfg: FinetuneConfig,
    out_dir: Path,
    extra: dict[str, Path] | None = None,
    tok: Any | None = None,
) -> dict[str, Any]:
    """Write the task's splits into `out_dir`; returns what `data.json` holds.

    raw: PubMedQA {"ori_pqal", "test_ground_truth"}, HoC {"train", "dev", "test"}.
    extra: optional PubMedQA stage sources {"pqa_a": path, "pqa_u": path}.
    """
    fmt = task_format(task)
    if task == "pubmedqa":
        splits = pqal_splits(raw["ori_pqal"], raw["test_ground_truth"], cfg.pqal_fold)
    else:
        splits = hoc_splits(raw["train"], raw["dev"], raw["test"])
    full_counts = {k: len(v) for k, v in splits.items()}
    splits["train"] = subsample(splits["train"], cfg.max_train_examples)
    splits["dev"] = subsample(splits["dev"], cfg.max_eval_examples)
    splits["test"] = subsample(splits["test"], cfg.max_eval_examples)
    # Earlier stages of the multi-stage schedule, in training order: PQA-A, then PQA-U.
    stages: list[dict[str, Any]] = []
    extra = extra or {}
    if task == "pubmedqa" and "pqa_a" in extra:
        a = pqaa_splits(extra["pqa_a"], cfg.pqa_a_train_size)
        splits["pqa_a_train"] = subsample(a["train"], cfg.max_train_examples)
        splits["pqa_a_dev"] = subsample(a["dev"], cfg.max_eval_examples)
        stages.append(
            {
                "name": "pqa_a",
                "train": "pqa_a_train",
                "dev": "pqa_a_dev",
                "epochs": cfg.pqa_a_epochs,
            }
        )
    if task == "pubmedqa" and "pqa_u" in extra:
        splits["pqa_u_train"] = subsample(pqau_examples(extra["pqa_u"]), cfg.max_train_examples)
        # PQA-U has no dev split of its own: its stage stops early on the PQA-L dev set.
        stages.append(
            {"name": "pqa_u", "train": "pqa_u_train", "dev": "dev", "epochs": cfg.pqa_u_epochs}
        )
    stages.append(
        {
            "name": "pqa_l" if task == "pubmedqa" else task,
            "train": "train",
            "dev": "dev",
            "epochs": epochs(cfg, task),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {name: write_examples(out_dir / f"{name}.jsonl", exs) for name, exs in splits.items()}
    if tok is not None:
        for name, exs in splits.items():
            rows = [[tok.encode(e.source), tok.encode(e.target)] for e in exs]
            write_atomic(out_dir / f"{name}.ids.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    majority = fmt.majority([e.label for e in splits["train"]])
    info = {
        "task": task,
        "metric": fmt.metric_name,
        "counts": counts,
        "full_counts": full_counts,
        "stages": stages,
        "tokenizer": getattr(tok, "hash", None) if tok is not None else None,
        "majority": {
            "label": label_to_json(majority),
            "dev": fmt.metric([majority] * len(splits["dev"]), [e.label for e in splits["dev"]]),
            "test": fmt.metric([majority] * len(splits["test"]), [e.label for e in splits["test"]]),
        },
    }
    write_atomic(out_dir / DATA_FILE, json.dumps(info, indent=2) + "\n")
    return info


def load_prepared(data_dir: Path) -> tuple[dict[str, Any], dict[str, list[Example]]]:
    """(data.json, split name -> examples) of a prepared task directory."""
    f = data_dir / DATA_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{data_dir} holds no prepared task data ({DATA_FILE})")
    info = json.loads(f.read_text())
    return info, {name: read_examples(data_dir / f"{name}.jsonl") for name in info["counts"]}


def load_token_ids(
    data_dir: Path, name: str, tokenizer_hash: str | None, info: dict[str, Any]
) -> list[tuple[list[int], list[int]]] | None:
    """The kept (source, target) ids of split `name`, if made with this tokenizer."""
    f = data_dir / f"{name}.ids.jsonl"
    if tokenizer_hash is None or info.get("tokenizer") != tokenizer_hash or not f.is_file():
        return None
    return [tuple(json.loads(line)) for line in f.read_text().splitlines()]
