"""PubMedQA, reasoning-required setting (Jin et al., 2019; the paper's Section 4.1, Appendix A.2).

Source `question: {QUESTION} context: {CONTEXTS joined by a space}` (no long answer), target
`the answer to the question given the context is {yes|no|maybe}.`, metric accuracy.

The split is the official one, recomputed from `ori_pqal.json`: the pubmedqa repository's
`preprocess/split_dataset.py` shuffles each label's PMIDs with Python's `random` seeded 0 and
deals them into stratified parts, first 2 parts (500 cross-validation items, 500 test items),
then 10 folds of the cross-validation items (fold 0: 450 train / 50 dev). The same random
calls are made here in the same order, so the test ids equal `test_ground_truth.json`, which
`pqal_splits` checks. PQA-A is split the same script's way: one shuffle (seed 0), the first
200,000 items train, the rest dev. That split equals the official one only if the items come in
`ori_pqaa.json`'s key order, which the shuffle starts from: from the JSON it does; from the
maintainers' Parquet (what the paper recipes fetch) the row order is the Parquet's, and whether
it matches the JSON's cannot be checked offline (neither file is in the mirror). The order's
digest is logged, so two sources can be compared.

Multi-stage schedule (given `pqa_a_url` / `pqa_u_url`). What the MediSwift paper says
(Appendix A.2): all models are trained on PQA-A, PQA-U and PQA-L "in a multi-stage manner
(Jin et al., 2019)", with a grid search of batch size x learning rate on each of the three
datasets, up to 5 epochs with early stopping, the last stage PQA-L; nothing more about PQA-U.
What Jin et al. (2019, "multi-phase fine-tuning") describe for BioBERT, as we recall their
method section (its text could not be consulted offline when this was written): phase I
fine-tunes on PQA-A in the reasoning-required setting (question + context); a bootstrapping
labeller is fine-tuned in the reasoning-free setting (question + long answer) on PQA-A, then on
PQA-L, and pseudo-labels PQA-U; phase II fine-tunes the phase-I model on the pseudo-labelled
PQA-U (question + context); the final phase fine-tunes on PQA-L. (Their best system also adds
the long answer's bag-of-words as auxiliary supervision, which the MediSwift paper does not
mention and we do not do. Their repository holds no training code: only the split, the
evaluation and the human-performance scripts, so the labeller's details are the paper's.)
What we do (`pqa_u_labeller: reasoning_free`, the default): stages `rf_pqa_a` (PQA-A with
`question: ... long answer: ...` sources) -> `rf_pqa_l` (PQA-L train, same form, stopped on PQA-L
dev in that form) label `rf_pqa_u` (PQA-U in that form) with constrained scoring; the evaluated
chain `pqa_a` -> `pqa_u` (those labels on the question + context items) -> `pqa_l` reads
question + context only. Each stage is a grid of its own (`mediswift.finetune.schedule`). Where
it differs from Jin et al.: our labeller is the same soft-prompted causal LM as the evaluated
model (not BioBERT with a classifier head), chosen per seed by the grid like every stage, and
its PQA-A stage has the grid too (PQA-A is trained twice). `pqa_u_labeller: pqa_a` is the cheap
variant: the chosen reasoning-required PQA-A model labels PQA-U from question + context (no
reasoning-free chain, PQA-A trained once), which is not what Jin et al. do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from mediswift.data.quarantine import RawFileError, reading
from mediswift.finetune.formats import Candidate, Example, Label
from mediswift.finetune.metrics import accuracy
from mediswift.finetune.registry import register
from mediswift.finetune.task import DownstreamTask, Stage, TableLayout, TaskData
from mediswift.sections import Grid, TaskSettings, task_settings
from mediswift.settings import result

log = logging.getLogger(__name__)

ANSWERS: tuple[str, ...] = ("yes", "no", "maybe")  # the script's label order, which matters
TARGET_PREFIX = "the answer to the question given the context is"
_PARSE = re.compile(re.escape(TARGET_PREFIX) + r"\s*(yes|no|maybe)\b")


UPSTREAM = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/"


class _PubMedQAFields(TaskSettings):
    pqal_fold: int = result(
        0, "official PQA-L cross-validation fold used as dev (BLURB: 0)", ge=0, le=9
    )
    pqa_a_url: str | None = result(
        None,
        "PQA-A (ori_pqaa.json, or the maintainers' Parquet): first stage of the multi-stage "
        "schedule (Appendix A.2), a grid of its own",
    )
    pqa_u_url: str | None = result(
        None,
        "PQA-U (JSON or Parquet): the stage before PQA-L; unlabelled items are pseudo-labelled "
        "(pqa_u_labeller)",
    )
    pqa_a_train_size: int = result(
        200_000, "PQA-A items for training; the rest is its dev set", ge=1
    )
    pqa_a_epochs: int = result(
        5, "epochs of the PQA-A stages (Appendix A.2: up to 5, early stopping)", ge=1
    )
    pqa_u_epochs: int = result(
        5, "epochs of the PQA-U stage (Appendix A.2: up to 5, early stopping)", ge=1
    )
    pqa_u_labeller: Literal["reasoning_free", "pqa_a"] = result(
        "reasoning_free",
        "what pseudo-labels PQA-U: reasoning_free (Jin et al.: question + long answer, trained "
        "PQA-A -> PQA-L) or pqa_a (the question + context PQA-A stage's model: cheaper)",
    )


PubMedQASettings = task_settings(
    "PubMedQASettings",
    url=UPSTREAM,
    # Appendix A.2: batch {8, 16, 32, 64} x lr {2e-4, 1e-4, 5e-5, 2.5e-5}, 5 epochs, 9 tokens.
    grid=Grid(batch_sizes=[8, 16, 32, 64], learning_rates=[2e-4, 1e-4, 5e-5, 2.5e-5]),
    epochs=5,
    prompt_tokens=9,
    base=_PubMedQAFields,
)


@register
class PubMedQA(DownstreamTask):
    name = "pubmedqa"
    metric_name = "accuracy"
    Settings = PubMedQASettings
    upstream = UPSTREAM
    mirror_folder = "pubmedqa/"
    files = {"ori_pqal": "ori_pqal.json", "test_ground_truth": "test_ground_truth.json"}
    table = TableLayout(
        "table3_pubmedqa",
        "Table 3: PubMedQA reasoning-required, PQA-L test accuracy (%)",
        "accuracy (%)",
        digits=1,
    )

    def sources(self) -> dict[str, str]:
        out = super().sources()
        s = self.settings
        for role, url in (("pqa_a", s.pqa_a_url), ("pqa_u", s.pqa_u_url)):
            if url:
                out[role] = url
        return out

    def split_settings(self) -> dict[str, Any]:
        return {"pqal_fold": self.settings.pqal_fold}

    def eval_sources(self) -> dict[str, str]:
        return super().sources()  # dev and test are PQA-L's: never the large PQA-A/U files

    def load(self, files: dict[str, Path]) -> TaskData:
        """PQA-L's official split; with PQA-A/PQA-U files, the multi-stage schedule (module
        docstring): the evaluated chain reads question + context only; the reasoning-free
        labeller chain (`rf_*` splits, long answers in the source) only labels PQA-U."""
        s = self.settings
        parts = pqal_parts(files["ori_pqal"], files["test_ground_truth"], s.pqal_fold)
        src = str(files["ori_pqal"])
        splits = {name: examples(part, src) for name, part in parts.items()}
        stages: list[Stage] = []
        after = None  # the previous stage of the evaluated chain
        if "pqa_a" in files:
            a = pqaa_parts(files["pqa_a"], s.pqa_a_train_size)
            src_a = str(files["pqa_a"])
            splits["pqa_a_train"], splits["pqa_a_dev"] = (examples(p, src_a) for p in a)
            stages.append(Stage("pqa_a", "pqa_a_train", "pqa_a_dev", s.pqa_a_epochs))
            after = "pqa_a"
        if "pqa_u" in files:
            u, labelled = pqau_items(files["pqa_u"])
            src_u = str(files["pqa_u"])
            splits["pqa_u_train"] = pqau_from(u, labelled, src_u)
            # PQA-U has no dev split of its own: its stage stops early on the PQA-L dev set.
            if labelled:
                stages.append(Stage("pqa_u", "pqa_u_train", "dev", s.pqa_u_epochs, after=after))
            elif s.pqa_u_labeller == "pqa_a":
                if after != "pqa_a":
                    raise ValueError("pqa_u_labeller: pqa_a needs a PQA-A stage (pqa_a_url)")
                stages.append(
                    Stage("pqa_u", "pqa_u_train", "dev", s.pqa_u_epochs, True, "pqa_a", "pqa_a",
                          "pqa_u_train")
                )  # fmt: skip
            else:
                labeller = []
                if "pqa_a" in files:
                    splits["rf_pqa_a_train"], splits["rf_pqa_a_dev"] = (
                        examples(p, src_a, reasoning_free=True) for p in a
                    )
                    labeller.append(
                        Stage("rf_pqa_a", "rf_pqa_a_train", "rf_pqa_a_dev", s.pqa_a_epochs)
                    )
                splits["rf_train"] = examples(parts["train"], src, reasoning_free=True)
                splits["rf_dev"] = examples(parts["dev"], src, reasoning_free=True)
                rf_after = labeller[-1].name if labeller else None
                labeller.append(Stage("rf_pqa_l", "rf_train", "rf_dev", s.epochs, after=rf_after))
                splits["rf_pqa_u"] = pqau_from(u, False, src_u, reasoning_free=True)
                stages = labeller + stages
                stages.append(
                    Stage("pqa_u", "pqa_u_train", "dev", s.pqa_u_epochs, True, after,
                          "rf_pqa_l", "rf_pqa_u")
                )  # fmt: skip
            after = "pqa_u"
        stages.append(Stage("pqa_l", "train", "dev", s.epochs, after=after))
        return TaskData(splits, stages)

    def multi_stage(self) -> bool:
        return bool(self.settings.pqa_a_url or self.settings.pqa_u_url)

    def stage_epochs(self, stage: str) -> int:
        s = self.settings
        epochs = {"pqa_a": s.pqa_a_epochs, "rf_pqa_a": s.pqa_a_epochs, "pqa_u": s.pqa_u_epochs}
        return epochs.get(stage, s.epochs)

    def target(self, label: Label) -> str:
        if label not in ANSWERS:
            raise ValueError(f"PubMedQA label must be one of {ANSWERS}, got {label!r}")
        return f"{TARGET_PREFIX} {label}."

    def all_targets(self) -> list[str]:
        return [self.target(a) for a in ANSWERS]

    def candidates(self, chosen: Label | None) -> list[Candidate]:
        # One step: the three complete answers.
        return [Candidate(self.target(a), a, True) for a in ANSWERS]

    def parse(self, generated: str) -> Label | None:
        m = _PARSE.search(" ".join(generated.lower().split()))
        return m.group(1) if m else None

    def metric(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> float:
        return accuracy(preds, golds)

    def majority(self, train_labels: Sequence[Label]) -> Label:
        counts = Counter(train_labels)
        # Ties broken by the answer order, so the baseline does not depend on dict order.
        return max(ANSWERS, key=lambda a: (counts[a], -ANSWERS.index(a)))


def load_json(path: Path) -> dict[str, Any]:
    """The JSON object of a PubMedQA file; a RawFileError naming the file when its content is
    bad (not UTF-8, not JSON, nested too deeply, not an object)."""
    try:
        body = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read PubMedQA JSON: {e}") from e
    with reading(path):
        data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise RawFileError(path, "expected a JSON object of PMID -> item")
    return data


def check_item(path: Path | str, pmid: str, item: Any) -> None:
    """An item must be an object with a string QUESTION and a list of string CONTEXTS."""
    if not isinstance(item, dict):
        raise RawFileError(path, f"item {pmid} is a {type(item).__name__}, not an object")
    for field in ("QUESTION", "CONTEXTS"):
        if field not in item:
            raise RawFileError(path, f"item {pmid} lacks field {field!r}")
    if not isinstance(item.get("QUESTION"), str):
        raise RawFileError(path, f"item {pmid}: QUESTION is not a string")
    contexts = item.get("CONTEXTS")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise RawFileError(path, f"item {pmid}: CONTEXTS is not a list of strings")


def load_items_json(path: Path) -> dict[str, dict[str, Any]]:
    """PMID -> item of a PubMedQA JSON file, every item checked (`check_item`)."""
    data = load_json(path)
    for pmid, item in data.items():
        check_item(path, pmid, item)
    return data


def load_ground_truth(path: Path) -> dict[str, str]:
    """PMID -> published answer of `test_ground_truth.json`."""
    data = load_json(path)
    for pmid, label in data.items():
        if label not in ANSWERS:
            raise RawFileError(path, f"item {pmid}: answer {label!r} is not yes/no/maybe")
    return data


def _split_label(pmids: list[str], fold: int, rng: random.Random) -> list[list[str]]:
    """Shuffle one label's PMIDs and cut them into `fold` runs of ceil(n / fold)."""
    rng.shuffle(pmids)
    size = math.ceil(len(pmids) / fold)
    return [
        pmids[i * size : (i + 1) * size] if i < fold - 1 else pmids[i * size :] for i in range(fold)
    ]


def stratified_split(
    dataset: dict[str, dict[str, Any]], fold: int, rng: random.Random, source: str = "dataset"
) -> list[dict[str, dict[str, Any]]]:
    """The official label-stratified split into `fold` parts (same random calls, same order)."""
    by_label: dict[str, list[str]] = {a: [] for a in ANSWERS}
    for pmid, item in dataset.items():
        label = item.get("final_decision")
        if not isinstance(label, str) or label not in by_label:
            raise RawFileError(
                source, f"item {pmid} has final_decision {label!r}, not yes/no/maybe"
            )
        by_label[label].append(pmid)
    parts = {a: _split_label(p, fold, rng) for a, p in by_label.items()}
    out = [{pmid: dataset[pmid] for a in ANSWERS for pmid in parts[a][i]} for i in range(fold)]
    if len(out[-1]) != len(out[0]):
        # Rebalance as upstream does: move one random item of every other part to the last.
        for i in range(fold - 1):
            picked = rng.choice(list(out[i]))
            out[-1][picked] = out[i].pop(picked)
    return out


def official_pqal_split(
    dataset: dict[str, dict[str, Any]], source: str = "ori_pqal.json"
) -> tuple[list[dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """(10 cross-validation folds, test set), exactly as `split_dataset.py pqal` makes them."""
    rng = random.Random(0)
    cv_set, test_set = stratified_split(dataset, 2, rng, source)
    return stratified_split(cv_set, 10, rng, source), test_set


def fold_train_dev(
    folds: list[dict[str, dict[str, Any]]], fold: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Fold `fold` is dev; the other nine, in order, are train (upstream's `combine_other`)."""
    train = {p: it for i, f in enumerate(folds) if i != fold for p, it in f.items()}
    return train, folds[fold]


def to_example(
    pmid: str, item: dict[str, Any], task: PubMedQA, source: str = "", reasoning_free: bool = False
) -> Example:
    """The example of a checked item (`check_item`); a RawFileError names the file and item.

    Reasoning-required (what every evaluated model reads): `question: Q context: C`.
    Reasoning-free (only the PQA-U labeller reads it): `question: Q long answer: A`."""
    try:
        question, contexts, label = item["QUESTION"], item["CONTEXTS"], item["final_decision"]
        target = task.target(label)
    except KeyError as e:
        raise RawFileError(source, f"item {pmid} lacks field {e}") from e
    except ValueError as e:
        raise RawFileError(source, f"item {pmid}: {e}") from e
    if reasoning_free:
        answer = item.get("LONG_ANSWER")
        if not isinstance(answer, str) or not answer.strip():
            raise RawFileError(source, f"item {pmid} has no LONG_ANSWER (the labeller reads it)")
        return Example(str(pmid), f"question: {question} long answer: {answer}", target, label)
    text = f"question: {question} context: {' '.join(contexts)}"
    return Example(str(pmid), text, target, label)


def examples(
    items: dict[str, dict[str, Any]], source: str, reasoning_free: bool = False
) -> list[Example]:
    task = PubMedQA()
    return [to_example(p, it, task, source, reasoning_free) for p, it in items.items()]


def check_test_split(
    test_set: dict[str, dict[str, Any]], ground_truth: dict[str, str], source: str
) -> None:
    """The recomputed test set must equal the published ground truth (ids and labels)."""
    ours = {p: it["final_decision"] for p, it in test_set.items()}
    if ours != ground_truth:
        missing = sorted(set(ground_truth) - set(ours))[:5]
        extra = sorted(set(ours) - set(ground_truth))[:5]
        wrong = sorted(p for p in ours.keys() & ground_truth.keys() if ours[p] != ground_truth[p])
        raise ValueError(
            f"{source}: recomputed PQA-L test split differs from the ground truth "
            f"(missing {missing}, extra {extra}, label differs {wrong[:5]})"
        )


def pqal_parts(
    ori_pqal: Path, ground_truth: Path, fold: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """PQA-L's items of train/dev (official CV fold) and test, checked against
    `test_ground_truth.json`."""
    data = load_items_json(ori_pqal)
    folds, test = official_pqal_split(data, str(ori_pqal))
    check_test_split(test, load_ground_truth(ground_truth), str(ground_truth))
    train, dev = fold_train_dev(folds, fold)
    return {"train": train, "dev": dev, "test": test}


def pqal_splits(ori_pqal: Path, ground_truth: Path, fold: int = 0) -> dict[str, list[Example]]:
    """PQA-L train/dev (official CV fold) and test, checked against `test_ground_truth.json`."""
    parts = pqal_parts(ori_pqal, ground_truth, fold)
    return {name: examples(part, str(ori_pqal)) for name, part in parts.items()}


def load_items(path: Path) -> dict[str, dict[str, Any]]:
    """PMID -> item of a PubMedQA file in either published format: the repository's JSON
    (`ori_pqaa.json`: QUESTION, CONTEXTS, LONG_ANSWER, final_decision) or the dataset
    maintainers' Parquet on the Hugging Face hub (`pqa_artificial`, `pqa_unlabeled`: pubid,
    question, context.contexts, long_answer, final_decision when labelled), read as the same
    item shape."""
    if Path(path).suffix != ".parquet":
        return load_items_json(path)
    with reading(path):
        out = _parquet_items(path)
    for pmid, item in out.items():
        check_item(path, pmid, item)
    return out


def _parquet_items(path: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=None)
    except Exception as e:  # pyarrow raises several kinds for a bad file
        raise ValueError(f"{path}: cannot read PubMedQA Parquet: {e}") from e
    names = set(table.column_names)
    missing = {"pubid", "question", "context"} - names
    if missing:
        raise ValueError(f"{path}: PubMedQA Parquet lacks column(s) {sorted(missing)}")
    rows = table.select(
        [c for c in ("pubid", "question", "context", "long_answer", "final_decision") if c in names]
    )
    out: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():
        item = {"QUESTION": row["question"], "CONTEXTS": list(row["context"]["contexts"])}
        if row.get("long_answer") is not None:
            item["LONG_ANSWER"] = row["long_answer"]
        if row.get("final_decision") is not None:
            item["final_decision"] = row["final_decision"]
        out[str(row["pubid"])] = item
    return out


def pqaa_parts(
    ori_pqaa: Path, train_size: int = 200_000
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """PQA-A's (train, dev) items: one seeded shuffle of the file's order (the official split
    needs `ori_pqaa.json`'s key order), the first `train_size` train, the rest dev."""
    data = load_items(ori_pqaa)
    pmids = list(data)  # the file's order: the official split assumes ori_pqaa.json's
    log.info(
        "%s: PQA-A order digest %s (the official split needs ori_pqaa.json's key order)",
        ori_pqaa, hashlib.sha256("\n".join(pmids).encode()).hexdigest()[:16],
    )  # fmt: skip
    random.Random(0).shuffle(pmids)
    if len(pmids) <= train_size:
        raise ValueError(
            f"{ori_pqaa}: {len(pmids)} items leave no dev set with pqa_a_train_size={train_size}"
        )
    return (
        {p: data[p] for p in pmids[:train_size]},
        {p: data[p] for p in pmids[train_size:]},
    )


def pqaa_splits(ori_pqaa: Path, train_size: int = 200_000) -> dict[str, list[Example]]:
    """PQA-A (artificially labelled): one seeded shuffle, first `train_size` train, rest dev."""
    train, dev = pqaa_parts(ori_pqaa, train_size)
    return {"train": examples(train, str(ori_pqaa)), "dev": examples(dev, str(ori_pqaa))}


def pqau_items(ori_pqau: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """PQA-U's items and whether they are labelled: published unlabelled; a file whose items
    all carry a pseudo label in `final_decision` is used as labelled (all or none)."""
    data = load_items(ori_pqau)
    labelled = [it.get("final_decision") in ANSWERS for it in data.values()]
    if any(labelled) and not all(labelled):
        raise ValueError(
            f"{ori_pqau}: some PQA-U items have a pseudo label in final_decision and some do "
            "not: give all or none"
        )
    return data, bool(data) and all(labelled)


def pqau_from(
    data: dict[str, dict[str, Any]], labelled: bool, source: str, reasoning_free: bool = False
) -> list[Example]:
    """PQA-U examples; unlabelled ones have label None and an empty target (the schedule
    pseudo-labels them before their stage)."""
    if labelled:
        return examples(data, source, reasoning_free)
    task = PubMedQA()
    out = []
    for pmid, item in data.items():
        ex = to_example(pmid, {**item, "final_decision": "yes"}, task, source, reasoning_free)
        out.append(Example(ex.id, ex.source, "", None))
    return out


def pqau_examples(ori_pqau: Path, reasoning_free: bool = False) -> list[Example]:
    """PQA-U items (`pqau_items`, `pqau_from`)."""
    data, labelled = pqau_items(ori_pqau)
    return pqau_from(data, labelled, str(ori_pqau), reasoning_free)


def pseudo_labelled(items: list[Example]) -> bool:
    return any(e.label is None for e in items)
