"""Task data for fine-tuning, prepared once per task and shared by every grid point.

`prepare_task` reads the raw files the finetune stage fetched for a task under `<home>/raw`,
builds its splits (the task plug-in's `load`), applies the optional example caps (a seeded random subset,
never "the first n": the PQA-L splits are ordered by label), and writes one JSONL file per
split plus `data.json` (counts, the training schedule's stages and the majority-class
baseline).
Given the tokenizer, it also keeps every example's source and target token ids
(`<split>.ids.jsonl`, untruncated), so that grid points do not tokenize the same texts again.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from mediswift.artifacts import write_atomic
from mediswift.data.quarantine import RawFileError, quarantined
from mediswift.finetune.formats import Example, label_to_json, read_examples, write_examples
from mediswift.finetune.stats import bootstrap_interval
from mediswift.finetune.task import DownstreamTask, Stage, TaskData, stage_json

DATA_FILE = "data.json"


def subsample(examples: list[Example], cap: int | None, seed: int = 0) -> list[Example]:
    """At most `cap` examples: a seeded random subset kept in the original order."""
    if cap is None or len(examples) <= cap:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), cap))
    return [examples[i] for i in keep]


def load_task(task: DownstreamTask, files: dict[str, Path], home: Path | None = None) -> TaskData:
    """The task's splits from its raw files (`task.load`). A file whose content the task
    cannot load (a RawFileError from its reader) is moved aside when it lies in `home`'s raw
    folder, so the next run fetches it again: these files publish no checksum that would tell
    a bad copy from a good one. The error names the file and where it went."""
    try:
        return task.load(files)
    except RawFileError as e:
        moved = quarantined(home, e) if home is not None else e
        if moved is e:
            raise
        raise moved from e


def prepare_task(
    task: DownstreamTask,
    files: dict[str, Path],
    out_dir: Path,
    tok: Any | None = None,
    home: Path | None = None,
) -> dict[str, Any]:
    """Write the task's splits into `out_dir`; returns what `data.json` holds.

    files: role -> local path of every raw file the task declares (`task.sources()`).
    Splits a stage trains on (or labels from) are capped at the task's `max_train_examples`, the
    others (dev, test) at `max_eval_examples`. home: where the files were fetched to (see `load_task`).
    """
    data = load_task(task, files, home)
    splits, stages = data.splits, data.stages or [task.final_stage()]
    missing = {"train", "dev", "test"} - set(splits)
    if missing:
        raise ValueError(f"task {task.name}: load() gave no {sorted(missing)} split")
    full_counts = {k: len(v) for k, v in splits.items()}
    # A split a labeller reads holds the same items as the split it labels: same cap, same
    # seeded subset (the lists are equally long and in the same order), so the ids match.
    train_splits = {st.train for st in stages} | {st.label_split for st in stages if st.label_split}
    s = task.settings
    for name in splits:
        cap = s.max_train_examples if name in train_splits else s.max_eval_examples
        splits[name] = subsample(splits[name], cap)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {name: write_examples(out_dir / f"{name}.jsonl", exs) for name, exs in splits.items()}
    if tok is not None:
        for name, exs in splits.items():
            rows = [[tok.encode(e.source), tok.encode(e.target)] for e in exs]
            write_atomic(out_dir / f"{name}.ids.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    train = splits["train"]
    test_golds = [e.label for e in splits["test"]]
    baseline_test = task.baseline(train, splits["test"])
    info = {
        "task": task.name,
        "metric": task.metric_name,
        "counts": counts,
        "full_counts": full_counts,
        "stages": [stage_json(st) for st in stages],
        "tokenizer": getattr(tok, "hash", None) if tok is not None else None,
        # The task's trivial baseline (the majority class for classification tasks).
        "majority": {
            "label": label_to_json(task.baseline_label(train)),
            **{
                split: task.metric(
                    task.baseline(train, splits[split]), [e.label for e in splits[split]]
                )
                for split in ("dev", "test")
            },
            # The same bootstrap over test examples as the models' intervals, so a reader can
            # tell whether a model's interval clears the baseline's.
            "test_ci95": bootstrap_interval(task.metric, [baseline_test], test_golds),
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


def schedule_of(info: dict[str, Any]) -> list[Stage]:
    """The training schedule `data.json` lists."""
    return [Stage(**st) for st in info["stages"]]


def load_token_ids(
    data_dir: Path, name: str, tokenizer_hash: str | None, info: dict[str, Any]
) -> list[tuple[list[int], list[int]]] | None:
    """The kept (source, target) ids of split `name`, if made with this tokenizer."""
    f = data_dir / f"{name}.ids.jsonl"
    if tokenizer_hash is None or info.get("tokenizer") != tokenizer_hash or not f.is_file():
        return None
    return [tuple(json.loads(line)) for line in f.read_text().splitlines()]
