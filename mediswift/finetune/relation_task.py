"""What BC5CDR and DDI share as downstream tasks: end-to-end relation extraction by generation.

A label is the set of gold triples, as a sorted tuple of (head, tail, relation) tuples (JSON: a
list of lists). The model generates the target sentence; `parse` reads the triples back and the
metric is micro F1 over exact (normalised) triples, with precision and recall reported beside it
(`scores`). These tasks have no candidate grammar (the output space is every pair of names in
the text), so they are evaluated by greedy generation only.

The trivial baseline is a lookup, not a model: for each document, every training triple whose
head and tail both occur in its text. It shows what memorising the training pairs gives.

Training targets longer than the context allows are a problem for small context windows (DDI
has a 738-word target): `max_train_triples` leaves such training examples out (dev and test are
never filtered; a document with more relations than a generation can hold loses recall).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from mediswift.finetune.formats import Example, Label
from mediswift.finetune.relations import RelationExample, Template, Triple, micro_prf, parse_target
from mediswift.finetune.task import DownstreamTask, TaskData
from mediswift.sections import TaskSettings
from mediswift.settings import result


class RelationFields(TaskSettings):
    max_train_triples: int | None = result(
        None, "training examples with more relations are left out (None: keep all)", ge=1
    )


def to_label(triples: Sequence[Triple]) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted({(t.head, t.tail, t.relation) for t in triples}))


class RelationTask(DownstreamTask):
    """Base of the relation-extraction tasks; subclasses give the template and the splits."""

    template: ClassVar[Template]
    modes = ("generate",)
    metric_name = "micro_f1"
    baseline_name = "train pairs found in the text"

    def read_splits(self, files: dict[str, Path]) -> dict[str, list[RelationExample]]:
        raise NotImplementedError

    def load(self, files: dict[str, Path]) -> TaskData:
        splits = self.read_splits(files)
        cap = self.settings.max_train_triples
        if cap is not None:
            splits["train"] = [r for r in splits["train"] if len(r.triples) <= cap]
        out = {
            name: [Example(r.id, r.source, r.target, to_label(r.triples)) for r in rows]
            for name, rows in splits.items()
        }
        return TaskData(out, [self.final_stage()])

    def target(self, label: Label) -> str:
        triples = [Triple(*t) for t in label]
        return "; ".join(self.template.render(t) for t in triples) + "."

    def all_targets(self) -> list[str]:
        return []  # no fixed set: the training targets bound the length

    def budget_targets(self, train_targets: Sequence[str]) -> list[str]:
        return list(train_targets)

    def parse(self, generated: str) -> Label | None:
        found = parse_target(generated, self.template)
        return to_label(list(found)) if found else None

    def metric(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> float:
        return micro_prf(preds, golds)[2]

    def scores(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> dict[str, float]:
        p, r, _ = micro_prf(preds, golds)
        return {"precision": p, "recall": r}

    def majority(self, train_labels: Sequence[Label]) -> Label:
        # The single most frequent training triple (for the manifest; `baseline` is the one
        # scored).
        counts = Counter(tuple(t) for label in train_labels for t in label)
        return (max(counts, key=lambda t: (counts[t], t)),) if counts else ()

    def baseline(self, train: Sequence[Example], split: Sequence[Example]) -> list[Label]:
        known = {tuple(t) for ex in train for t in ex.label}
        out = []
        for ex in split:
            text = " ".join(ex.source.lower().split())
            out.append(tuple(sorted(t for t in known if t[0] in text and t[1] in text)))
        return out

    def baseline_label(self, train: Sequence[Example]) -> Any:
        return self.baseline_name
