"""Hallmarks of Cancer (Baker et al., 2016), BLURB split (the paper's Section 4.2, Appendix A.3).

The BLURB files hold one sentence a row (`labels<TAB>sentence<TAB>index`, index `<PMID>_s<i>`,
labels `k_0|k_1` flags for the 10 hallmarks, comma-separated). A document is the union of its
sentences' labels, its text the sentences in order: 1295/186/371 train/dev/test documents.
(The paper's 1108/157/315 is the older BLUE split, which is not available offline.)

Target: `the type of this document is {hallmarks in label order joined by "; "}.`; a document
with no hallmark gets `the type of this document is empty.`. Hallmark names contain "and", so
"; " is the joiner that keeps a generated list unambiguous. Metric: micro-F1 over the 10
hallmarks at document level (BLURB's convention). Reported beside it (`extra_metrics`):
micro-F1 in BioGPT's convention, the one the compared numbers use, over 11 classes with "empty"
the class of a document without hallmarks (`micro_f1_biogpt`): a correctly predicted empty
document counts there, and not in the 10-class score.

Constrained prediction walks this grammar greedily: first the best of the 10 one-hallmark
prefixes and the complete `empty` sentence, then, after hallmark k, the best of "add a hallmark
with a higher index" and "end the sentence here", until a complete sentence wins (see
`mediswift.finetune.scoring.constrained_predict`). It scores at most 11 candidates a step and
can produce any label set, which a fixed list of label sets could not.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mediswift.data.quarantine import RawFileError, check_utf8, reading
from mediswift.finetune.formats import Candidate, Example, Label
from mediswift.finetune.metrics import mean_std, micro_f1, micro_f1_biogpt
from mediswift.finetune.registry import register
from mediswift.finetune.task import DownstreamTask, ExtraMetric, TableLayout, TaskData
from mediswift.sections import Grid, task_settings

HALLMARKS: tuple[str, ...] = (
    "activating invasion and metastasis",
    "avoiding immune destruction",
    "cellular energetics",
    "enabling replicative immortality",
    "evading growth suppressors",
    "genomic instability and mutation",
    "inducing angiogenesis",
    "resisting cell death",
    "sustaining proliferative signaling",
    "tumor promoting inflammation",
)
TARGET_PREFIX = "the type of this document is"
EMPTY = "empty"
JOINER = "; "
_PARSE = re.compile(re.escape(TARGET_PREFIX) + r"\s*(.*)")
_INDEX = re.compile(r"^(\d+)_s(\d+)$")


# BLURB's processed HoC files, as published in a public repository of the BLURB pipeline.
UPSTREAM = (
    "https://raw.githubusercontent.com/hieunguyen7337/KeBioLM/"
    "bc7c3667c786236252ba5b26b3b921197465b7a3/data/HoC/"
)

HoCSettings = task_settings(
    "HoCSettings",
    url=UPSTREAM,
    # Appendix A.3: batch {16, 32, 64} x lr {8e-5, 4e-5, 2e-5, 1e-5}, 100 epochs, 1 token.
    grid=Grid(batch_sizes=[16, 32, 64], learning_rates=[8e-5, 4e-5, 2e-5, 1e-5]),
    epochs=100,
    prompt_tokens=1,
)


@register
class HoC(DownstreamTask):
    name = "hoc"
    metric_name = "micro_f1"
    baseline_name = "most frequent hallmark"
    Settings = HoCSettings
    upstream = UPSTREAM
    mirror_folder = "hoc/"
    files = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    table = TableLayout(
        "table4_hoc",
        "Table 4: HoC (BLURB split) test micro-F1 (%), 10 hallmark classes",
        "micro-F1 (%)",
        digits=2,
    )
    extra_metrics = {
        "micro_f1_biogpt": ExtraMetric(
            "micro-F1, BioGPT convention: 11 classes incl. empty", micro_f1_biogpt
        )
    }

    def load(self, files: dict[str, Path]) -> TaskData:
        return TaskData(
            hoc_splits(files["train"], files["dev"], files["test"]), [self.final_stage()]
        )

    def _sentence(self, labels: Sequence[int]) -> str:
        return f"{TARGET_PREFIX} " + JOINER.join(HALLMARKS[k] for k in labels)

    def target(self, label: Label) -> str:
        labels = tuple(sorted(label))
        if any(not 0 <= k < len(HALLMARKS) for k in labels):
            raise ValueError(f"HoC label indices must be in 0..9, got {labels}")
        return (self._sentence(labels) if labels else f"{TARGET_PREFIX} {EMPTY}") + "."

    def all_targets(self) -> list[str]:
        return [self.target(()), self.target(tuple(range(len(HALLMARKS))))]

    def budget_targets(self, train_targets: Sequence[str]) -> list[str]:
        # All 10 hallmarks never occur (at most 5 in training): reserving room for them would
        # cut sources for nothing. Longer predictions are cut (generate) or unscorable (score).
        return [self.target(()), *train_targets]

    def candidates(self, chosen: Label | None) -> list[Candidate]:
        chosen = tuple(chosen or ())
        start = chosen[-1] + 1 if chosen else 0
        out = [
            Candidate(self._sentence(chosen + (k,)), chosen + (k,), False)
            for k in range(start, len(HALLMARKS))
        ]
        return out + [Candidate(self.target(chosen), chosen, True)]

    def parse(self, generated: str) -> Label | None:
        m = _PARSE.search(" ".join(generated.lower().split()))
        if not m:
            return None
        rest = m.group(1).split(".")[0]
        names = {_norm(h): k for k, h in enumerate(HALLMARKS)}
        found = {names[_norm(p)] for p in rest.split(";") if _norm(p) in names}
        return tuple(sorted(found))

    def metric(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> float:
        return micro_f1(preds, golds)

    def majority(self, train_labels: Sequence[Label]) -> Label:
        # Every document labelled with the most frequent training hallmark (the most frequent
        # label *set* is usually the empty one, whose micro-F1 is 0 and says nothing).
        counts = Counter(k for labels in train_labels for k in labels)
        if not counts:
            return ()
        return (max(range(len(HALLMARKS)), key=lambda k: (counts[k], -k)),)


def biogpt_score(per_seed_preds: Sequence[Sequence[Label | None]], golds: Sequence[Label]) -> float:
    """The seed-mean test micro-F1 in BioGPT's convention, from each seed's test predictions
    and the gold labels (as `mediswift.finetune.stats.read_predictions` reads them)."""
    return mean_std([micro_f1_biogpt(preds, golds) for preds in per_seed_preds])[0]


def _norm(text: str) -> str:
    return " ".join(text.replace("-", " ").split()).strip()


def _flags(field: str, where: str) -> tuple[int, ...]:
    """`0_0,1_1,...` -> the indices whose flag is 1."""
    labels = []
    parts = field.split(",")
    if len(parts) != len(HALLMARKS):
        raise ValueError(f"{where}: expected {len(HALLMARKS)} label flags, got {field!r}")
    for k, part in enumerate(parts):
        idx, _, flag = part.partition("_")
        if idx != str(k) or flag not in ("0", "1"):
            raise ValueError(f"{where}: bad label flag {part!r} (want '{k}_0' or '{k}_1')")
        if flag == "1":
            labels.append(k)
    return tuple(labels)


def _read_rows(
    path: Path, f: Iterable[str]
) -> tuple[dict[str, dict[int, str]], dict[str, set[int]]]:
    """PMID -> sentence index -> sentence, and PMID -> hallmark indices, of one open TSV."""
    docs: dict[str, dict[int, str]] = {}
    labels: dict[str, set[int]] = {}
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header != ["labels", "sentence", "index"]:
        raise ValueError(f"{path}: header {header}, expected labels/sentence/index")
    for n, row in enumerate(reader, 2):
        try:
            check_utf8("\t".join(row))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from e
        if len(row) != 3:
            raise ValueError(f"{path}:{n}: expected 3 tab-separated fields, got {len(row)}")
        flags, sentence, index = row
        m = _INDEX.match(index)
        if not m:
            raise ValueError(f"{path}:{n}: index {index!r} is not <PMID>_s<i>")
        pmid, i = m.group(1), int(m.group(2))
        docs.setdefault(pmid, {})[i] = sentence
        labels.setdefault(pmid, set()).update(_flags(flags, f"{path}:{n}"))
    return docs, labels


def load_documents(path: Path) -> list[Example]:
    """Documents of one BLURB HoC TSV, in first-appearance order of their PMIDs; a RawFileError
    names the file and line of bad content."""
    task = HoC()
    try:
        # Undecodable bytes are kept (as surrogates) to be reported with their line number.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f, reading(path):
            docs, labels = _read_rows(path, f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read HoC TSV: {e}") from e
    except csv.Error as e:  # a field over csv's size limit, say
        raise RawFileError(path, f"not a TSV the csv module reads: {e}") from e
    out = []
    for pmid, sentences in docs.items():
        text = " ".join(sentences[i] for i in sorted(sentences))
        label = tuple(sorted(labels[pmid]))
        out.append(Example(pmid, text, task.target(label), label))
    return out


def hoc_splits(train: Path, dev: Path, test: Path) -> dict[str, list[Example]]:
    return {
        "train": load_documents(train),
        "dev": load_documents(dev),
        "test": load_documents(test),
    }
