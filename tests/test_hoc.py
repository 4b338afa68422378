"""HoC: BLURB documents from the sentence TSVs, targets, parsing and the candidate grammar."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from mediswift.finetune.hoc import HALLMARKS, HoC, biogpt_score, hoc_splits, load_documents
from mediswift.finetune.metrics import micro_f1_biogpt
from mediswift.finetune.stats import read_predictions
from mediswift.finetune.task import DownstreamTask


@pytest.fixture(scope="module")
def splits(mirror_dir: Path) -> dict:
    d = mirror_dir / "hoc"
    return hoc_splits(d / "train.tsv", d / "dev.tsv", d / "test.tsv")


def test_blurb_document_counts_and_labels(splits: dict) -> None:
    assert {k: len(v) for k, v in splits.items()} == {"train": 1295, "dev": 186, "test": 371}
    per_label = Counter(k for e in splits["train"] for k in e.label)
    assert [per_label[k] for k in range(10)] == [201, 86, 68, 87, 169, 222, 101, 309, 315, 180]
    assert sum(1 for e in splits["train"] if not e.label) == 197
    assert sum(1 for e in splits["test"] if not e.label) == 53


def test_document_is_union_of_sentences_in_order(tmp_path: Path) -> None:
    flags = lambda on: ",".join(f"{k}_{int(k in on)}" for k in range(10))  # noqa: E731
    rows = [
        (flags({2}), "Second sentence .", "11_s1"),
        (flags({0}), "First sentence .", "11_s0"),
        (flags(set()), "Other doc .", "12_s0"),
        (flags({0, 9}), "Third .", "11_s2"),
    ]
    f = tmp_path / "t.tsv"
    f.write_text("labels\tsentence\tindex\n" + "".join("\t".join(r) + "\n" for r in rows))
    docs = load_documents(f)
    assert [d.id for d in docs] == ["11", "12"]
    assert docs[0].source == "First sentence . Second sentence . Third ."
    assert docs[0].label == (0, 2, 9)
    assert docs[1].label == () and docs[1].target == "the type of this document is empty."
    assert docs[0].target == (
        "the type of this document is activating invasion and metastasis; "
        "cellular energetics; tumor promoting inflammation."
    )


def test_bad_tsv_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.tsv"
    f.write_text("labels\tsentence\tindex\n0_0,1_2\tx\t1_s0\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2"):
        load_documents(f)
    f.write_text("wrong header\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        load_documents(f)


def test_parse_round_trips_every_target() -> None:
    task = HoC()
    rng = random.Random(0)
    sets = [()] + [tuple(sorted(rng.sample(range(10), rng.randint(1, 10)))) for _ in range(200)]
    for labels in sets:
        assert task.parse(task.target(labels)) == labels
    # Moses-style spacing and case from a detokenizer, unknown pieces ignored, no sentence: None.
    assert task.parse(
        "The type of this document is resisting cell death ; foo ; cellular  energetics ."
    ) == (2, 7)
    assert task.parse("something else entirely") is None


def test_candidate_grammar_reaches_every_label_set() -> None:
    task = HoC()
    # Walking the grammar along any sorted label set ends at that set's complete target.
    for labels in [(), (0,), (3, 8), tuple(range(10))]:
        chosen = None
        for k in labels:
            nxt = [c for c in task.candidates(chosen) if not c.complete and c.label[-1] == k]
            assert len(nxt) == 1
            chosen = nxt[0].label
        final = [c for c in task.candidates(chosen) if c.complete]
        assert len(final) == 1 and final[0].label == labels
        assert final[0].text == task.target(labels)
    assert len(task.candidates(None)) == 11
    assert [c.complete for c in task.candidates(tuple(range(10)))] == [True]
    for a, b in itertools.combinations(task.candidates(None), 2):
        assert a.text != b.text


def test_majority_is_most_frequent_hallmark(splits: dict) -> None:
    task = HoC()
    maj = task.majority([e.label for e in splits["train"]])
    assert maj == (8,) and HALLMARKS[8] == "sustaining proliferative signaling"
    f1 = task.metric([maj] * len(splits["test"]), [e.label for e in splits["test"]])
    assert 0.0 < f1 < 0.5


def test_majority_in_biogpt_convention_misses_every_empty_document(splits: dict) -> None:
    # The baseline never predicts "empty": BioGPT's convention adds the 53 test documents
    # without a hallmark as false negatives of "empty" to the 10-class denominator 2TP+FP+FN.
    golds = [e.label for e in splits["test"]]
    preds = [(8,)] * len(golds)
    two_tp = 2 * sum(8 in g for g in golds)
    ten = HoC().metric(preds, golds)
    eleven = HoC.extra_metrics["micro_f1_biogpt"].fn(preds, golds)
    assert two_tp / eleven - two_tp / ten == pytest.approx(53)


def test_biogpt_convention_is_an_extra_metric_with_a_labelled_column() -> None:
    extra = HoC.extra_metrics["micro_f1_biogpt"]
    assert "BioGPT convention" in extra.label and "11 classes incl. empty" in extra.label
    assert extra.fn is micro_f1_biogpt
    assert "10 hallmark classes" in HoC.table.title
    assert DownstreamTask.extra_metrics == {}  # other tasks report their own metric only


def test_biogpt_score_from_saved_predictions(tmp_path: Path) -> None:
    # Two seeds' predictions files as a grid point writes them (dev rows are not scored).
    rows = {
        # (id, gold, prediction); over 11 classes seed 1 has TP 3, FN 1 and seed 2 TP 3, FP 1
        # (hallmark 3) and FN 1 ("empty" of document a).
        1: [("a", [], []), ("b", [1], [1]), ("c", [1, 2], [2])],
        2: [("a", [], [3]), ("b", [1], [1]), ("c", [1, 2], [1, 2])],
    }
    per_seed, golds = [], []
    for seed, docs in rows.items():
        path = tmp_path / f"s{seed}" / "predictions_score.jsonl"
        path.parent.mkdir()
        lines = [{"id": "d", "split": "dev", "gold": [], "pred": [4]}]
        lines += [{"id": i, "split": "test", "gold": g, "pred": p} for i, g, p in docs]
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        _, preds, golds = read_predictions(path, "test")
        per_seed.append(preds)
    assert biogpt_score(per_seed, golds) == pytest.approx((6 / 7 + 6 / 8) / 2)
