"""Task metrics: accuracy (PubMedQA) and document-level micro-F1 over label sets (HoC).

Both follow scikit-learn's definitions (`accuracy_score`, `f1_score(average="micro")` on the
label-indicator matrix, zero when there is nothing to count); tests check them against it.
`micro_f1_biogpt` is micro-F1 in BioGPT's HoC convention (its `hard_match_evaluation.py`), the
one its reported HoC numbers use: an empty label set is a class of its own, "empty".
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def accuracy(preds: Sequence[object], golds: Sequence[object]) -> float:
    """Fraction of exact matches; a None prediction (unparseable) is wrong."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold labels")
    if not golds:
        return 0.0
    return sum(p is not None and p == g for p, g in zip(preds, golds, strict=True)) / len(golds)


def micro_f1(preds: Sequence[Iterable[int] | None], golds: Sequence[Iterable[int]]) -> float:
    """Micro-averaged F1 over all (document, label) decisions: 2TP / (2TP + FP + FN)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold labels")
    tp = fp = fn = 0
    for p, g in zip(preds, golds, strict=True):
        ps, gs = set(p or ()), set(g)
        tp += len(ps & gs)
        fp += len(ps - gs)
        fn += len(gs - ps)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


# The "empty" class of BioGPT's convention: never a real label index, which are 0 and up.
EMPTY_CLASS = -1


def micro_f1_biogpt(preds: Sequence[Iterable[int] | None], golds: Sequence[Iterable[int]]) -> float:
    """Micro-F1 with "empty" as one more class, the label of an empty set in gold and prediction
    alike: a document with no label predicted empty is a true positive, not nothing to count.
    An unparsed prediction (None) names no class at all, as BioGPT's "failed" output matches
    none of its classes."""
    return micro_f1([_with_empty(p) for p in preds], [_with_empty(g) for g in golds])


def _with_empty(labels: Iterable[int] | None) -> tuple[int, ...] | None:
    if labels is None:
        return None
    return tuple(labels) or (EMPTY_CLASS,)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std
