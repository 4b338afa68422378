"""Metric functions against scikit-learn on random cases."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from mediswift.finetune.metrics import accuracy, mean_std, micro_f1


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


def test_mean_std_is_sample_std() -> None:
    vals = [0.5, 0.7, 0.65]
    m, s = mean_std(vals)
    assert m == pytest.approx(np.mean(vals))
    assert s == pytest.approx(statistics.stdev(vals))
    assert mean_std([0.3]) == (0.3, 0.0)
