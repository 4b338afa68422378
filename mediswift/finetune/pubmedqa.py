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
from typing import Any

from mediswift.data.quarantine import RawFileError, reading
from mediswift.finetune.formats import Candidate, Example, Label
from mediswift.finetune.metrics import accuracy
from mediswift.finetune.registry import register
from mediswift.finetune.task import DownstreamTask, Stage, TableLayout, TaskData
from mediswift.settings import Grid, TaskSettings, result, task_settings

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
        None, "PQA-A JSON (ori_pqaa.json): first stage of the multi-stage schedule (Appendix A.2)"
    )
    pqa_u_url: str | None = result(None, "pseudo-labelled PQA-U JSON: second stage, before PQA-L")
    pqa_a_train_size: int = result(
        200_000, "PQA-A items for training; the rest is its dev set", ge=1
    )
    pqa_a_epochs: int = result(1, "epochs of the PQA-A stage", ge=1)
    pqa_u_epochs: int = result(1, "epochs of the PQA-U stage", ge=1)


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
        """PQA-L's official split; PQA-A then PQA-U stages first when their files are given."""
        s = self.settings
        splits = pqal_splits(files["ori_pqal"], files["test_ground_truth"], s.pqal_fold)
        stages = []
        if "pqa_a" in files:
            a = pqaa_splits(files["pqa_a"], s.pqa_a_train_size)
            splits["pqa_a_train"], splits["pqa_a_dev"] = a["train"], a["dev"]
            stages.append(Stage("pqa_a", "pqa_a_train", "pqa_a_dev", s.pqa_a_epochs))
        if "pqa_u" in files:
            splits["pqa_u_train"] = pqau_examples(files["pqa_u"])
            # PQA-U has no dev split of its own: its stage stops early on the PQA-L dev set;
            # unlabelled items are labelled by the model of the previous stage first.
            pseudo = pseudo_labelled(splits["pqa_u_train"])
            stages.append(Stage("pqa_u", "pqa_u_train", "dev", s.pqa_u_epochs, pseudo))
        stages.append(Stage("pqa_l", "train", "dev", s.epochs))
        return TaskData(splits, stages)

    def stage_epochs(self, stage: str) -> int:
        s = self.settings
        return {"pqa_a": s.pqa_a_epochs, "pqa_u": s.pqa_u_epochs}.get(stage, s.epochs)

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


def to_example(pmid: str, item: dict[str, Any], task: PubMedQA, source: str = "") -> Example:
    """The example of a checked item (`check_item`); a RawFileError names the file and item."""
    try:
        question, contexts, label = item["QUESTION"], item["CONTEXTS"], item["final_decision"]
        target = task.target(label)
    except KeyError as e:
        raise RawFileError(source, f"item {pmid} lacks field {e}") from e
    except ValueError as e:
        raise RawFileError(source, f"item {pmid}: {e}") from e
    text = f"question: {question} context: {' '.join(contexts)}"
    return Example(str(pmid), text, target, label)


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


def pqal_splits(ori_pqal: Path, ground_truth: Path, fold: int = 0) -> dict[str, list[Example]]:
    """PQA-L train/dev (official CV fold) and test, checked against `test_ground_truth.json`."""
    task = PubMedQA()
    data = load_items_json(ori_pqal)
    folds, test = official_pqal_split(data, str(ori_pqal))
    check_test_split(test, load_ground_truth(ground_truth), str(ground_truth))
    train, dev = fold_train_dev(folds, fold)
    return {
        name: [to_example(p, it, task, str(ori_pqal)) for p, it in part.items()]
        for name, part in (("train", train), ("dev", dev), ("test", test))
    }


def load_items(path: Path) -> dict[str, dict[str, Any]]:
    """PMID -> item of a PubMedQA file in either published format: the repository's JSON
    (`ori_pqaa.json`: QUESTION, CONTEXTS, final_decision) or the dataset maintainers' Parquet on
    the Hugging Face hub (`pqa_artificial`, `pqa_unlabeled`: pubid, question,
    context.contexts, final_decision when labelled), read as the same item shape."""
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
        [c for c in ("pubid", "question", "context", "final_decision") if c in names]
    )
    out: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():
        item = {"QUESTION": row["question"], "CONTEXTS": list(row["context"]["contexts"])}
        if row.get("final_decision") is not None:
            item["final_decision"] = row["final_decision"]
        out[str(row["pubid"])] = item
    return out


def pqaa_splits(ori_pqaa: Path, train_size: int = 200_000) -> dict[str, list[Example]]:
    """PQA-A (artificially labelled): one seeded shuffle, first `train_size` train, rest dev."""
    task = PubMedQA()
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
    return {
        "train": [to_example(p, data[p], task, str(ori_pqaa)) for p in pmids[:train_size]],
        "dev": [to_example(p, data[p], task, str(ori_pqaa)) for p in pmids[train_size:]],
    }


def pqau_examples(ori_pqau: Path) -> list[Example]:
    """PQA-U items. Published unlabelled: their label is None and their target empty, and the
    schedule pseudo-labels them with the PQA-A-trained model before their stage (Appendix A.2).
    A file whose items all carry a pseudo label in `final_decision` is used as labelled."""
    task = PubMedQA()
    data = load_items(ori_pqau)
    labelled = [it.get("final_decision") in ANSWERS for it in data.values()]
    if any(labelled) and not all(labelled):
        raise ValueError(
            f"{ori_pqau}: some PQA-U items have a pseudo label in final_decision and some do "
            "not: give all or none"
        )
    if all(labelled) and data:
        return [to_example(p, it, task, str(ori_pqau)) for p, it in data.items()]
    out = []
    for pmid, item in data.items():
        ex = to_example(pmid, {**item, "final_decision": "yes"}, task, str(ori_pqau))
        out.append(Example(ex.id, ex.source, "", None))
    return out


def pseudo_labelled(items: list[Example]) -> bool:
    return any(e.label is None for e in items)
