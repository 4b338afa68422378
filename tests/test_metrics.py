"""Metric functions against scikit-learn on random cases."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from mediswift.finetune.metrics import accuracy, mean_std, micro_f1, micro_f1_biogpt


@pytest.mark.parametrize("seed", range(20))
def test_accuracy_matches_sklearn(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    golds = [rng.choice(["yes", "no", "maybe"]) for _ in range(n)]
    preds = [rng.choice(["yes", "no", "maybe"]) for _ in range(n)]
    assert accuracy(preds, golds) == pytest.approx(accuracy_score(golds, preds))


def test_accuracy_counts_unparsed_as_wrong() -> None:
    assert accuracy([None, "yes", "no"], ["yes", "yes", "yes"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        accuracy(["yes"], ["yes", "no"])


@pytest.mark.parametrize("seed", range(30))
def test_micro_f1_matches_sklearn(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    p_on = rng.random()

    def labels() -> tuple[int, ...]:
        return tuple(k for k in range(10) if rng.random() < p_on * 0.4)

    golds = [labels() for _ in range(n)]
    preds = [labels() for _ in range(n)]
    mlb = MultiLabelBinarizer(classes=list(range(10)))
    y_true, y_pred = mlb.fit_transform(golds), mlb.transform(preds)
    expected = f1_score(y_true, y_pred, average="micro", zero_division=0)
    assert micro_f1(preds, golds) == pytest.approx(expected)


def test_micro_f1_edge_cases() -> None:
    assert micro_f1([(), ()], [(), ()]) == 0.0  # nothing to count: sklearn's zero_division=0
    assert micro_f1([None, (1,)], [(1,), (1,)]) == pytest.approx(2 / 3)  # None = no labels
    assert micro_f1([(1, 2)], [(1, 2)]) == 1.0


def test_micro_f1_biogpt_counts_empty_as_a_class() -> None:
    # Document 1 has no hallmark and is predicted empty: nothing to count over 10 classes, a
    # true positive of "empty" over 11. Documents 2-3: TP 2 (1 and 2), FN 1 (1 of document 3).
    golds = [(), (1,), (1, 2)]
    preds = [(), (1,), (2,)]
    assert micro_f1(preds, golds) == pytest.approx(4 / 5)  # 2*2 / (2*2 + 0 + 1)
    assert micro_f1_biogpt(preds, golds) == pytest.approx(6 / 7)  # 2*3 / (2*3 + 0 + 1)
    # A hallmark predicted for an empty document: FP 1 over 10 classes, and FN "empty" too.
    assert micro_f1([(3,)], [()]) == 0.0
    assert micro_f1_biogpt([(3,), (1,)], [(), (1,)]) == pytest.approx(2 / 4)  # 2 / (2 + 1 + 1)
    # Empty predicted for a document with hallmarks: FN 1 over 10, FP "empty" too over 11.
    assert micro_f1_biogpt([(), (1,)], [(2,), (1,)]) == pytest.approx(2 / 4)
    # Unparsed (None) names no class, not "empty": a missed empty document is a FN.
    assert micro_f1_biogpt([None, (1,)], [(), (1,)]) == pytest.approx(2 / 3)
    assert micro_f1_biogpt([(), ()], [(), ()]) == 1.0  # 0 over 10 classes (nothing to count)
    with pytest.raises(ValueError, match="predictions"):
        micro_f1_biogpt([()], [(), ()])


@pytest.mark.parametrize("seed", range(20))
def test_micro_f1_biogpt_matches_sklearn_on_named_classes(seed: int) -> None:
    # BioGPT's scoring as its evaluation describes it: class names with "empty" among them,
    # binarized over those 11 names; an unparsed output ("failed") is no class at all.
    rng = random.Random(seed)
    names = [f"hallmark {k}" for k in range(10)]

    def labels() -> tuple[int, ...]:
        return tuple(k for k in range(10) if rng.random() < 0.15)

    golds = [labels() for _ in range(rng.randint(1, 40))]
    preds = [None if rng.random() < 0.1 else labels() for _ in golds]

    def named(label: tuple[int, ...] | None) -> list[str]:
        if label is None:
            return []
        return [names[k] for k in label] or ["empty"]

    mlb = MultiLabelBinarizer(classes=[*names, "empty"])
    y_true = mlb.fit_transform([named(g) for g in golds])
    y_pred = mlb.transform([named(p) for p in preds])
    expected = f1_score(y_true, y_pred, average="micro", zero_division=0)
    assert micro_f1_biogpt(preds, golds) == pytest.approx(expected)


def test_mean_std_is_sample_std() -> None:
    vals = [0.5, 0.7, 0.65]
    m, s = mean_std(vals)
    assert m == pytest.approx(np.mean(vals))
    assert s == pytest.approx(statistics.stdev(vals))
    assert mean_std([0.3]) == (0.3, 0.0)
