"""HoC: BLURB documents from the sentence TSVs, targets, parsing and the candidate grammar."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

import pytest

from mediswift.finetune.hoc import HALLMARKS, HoC, hoc_splits, load_documents


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
