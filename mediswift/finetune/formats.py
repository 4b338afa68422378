"""The task interface every fine-tuning task implements, and the example records it produces.

A task turns its raw records into `Example`s (source text, target sentence, gold label), and
describes the sentences a prediction may take as a small grammar (`candidates`), so that the
same code can score candidates (constrained prediction) for a three-way answer (PubMedQA) and
for a multi-label set (HoC). Labels are JSON-able: a string, or a sorted list of label indices.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mediswift.artifacts import tmp_path

Label = Any  # str (PubMedQA) or tuple[int, ...] of label indices (HoC)


@dataclass(frozen=True)
class Example:
    """One source-target pair (Section 2.2): `source` is x, `target` the sentence y."""

    id: str
    source: str
    target: str
    label: Label


@dataclass(frozen=True)
class Candidate:
    """A step of constrained prediction: a (partial) target sentence and the label it stands for.

    `complete` candidates end the sentence (their tokens are followed by eos when scored);
    partial ones are prefixes that later steps extend.
    """

    text: str
    label: Label
    complete: bool


class TaskFormat(ABC):
    """What the trainer and the scorer need to know about a task."""

    name: str
    metric_name: str

    @abstractmethod
    def target(self, label: Label) -> str:
        """The target sentence for a gold label."""

    @abstractmethod
    def all_targets(self) -> list[str]:
        """Targets that bound the target length by default (the longest sets the budget)."""

    def budget_targets(self, train_targets: Sequence[str]) -> list[str]:
        """Targets the context must make room for, given the training targets."""
        return self.all_targets()

    @abstractmethod
    def candidates(self, chosen: Label | None) -> list[Candidate]:
        """Next candidates after the partial label `chosen` (None: at the start)."""

    @abstractmethod
    def parse(self, generated: str) -> Label | None:
        """The label named by a generated sentence, None when it names none."""

    @abstractmethod
    def metric(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> float:
        """The task metric in [0, 1] (unparseable predictions count as wrong)."""

    @abstractmethod
    def majority(self, train_labels: Sequence[Label]) -> Label:
        """The majority-class prediction learned from the training labels."""


def label_to_json(label: Label) -> Any:
    return list(label) if isinstance(label, tuple) else label


def label_from_json(value: Any) -> Label:
    return tuple(value) if isinstance(value, list) else value


def write_examples(path: Path, examples: Iterable[Example]) -> int:
    """JSONL, one example a line, written to a temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for ex in examples:
            row = asdict(ex)
            row["label"] = label_to_json(ex.label)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_examples(path: Path) -> list[Example]:
    out: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                out.append(
                    Example(row["id"], row["source"], row["target"], label_from_json(row["label"]))
                )
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{i}: not an example record ({e})") from e
    return out
