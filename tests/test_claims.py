"""The claims section: each of the paper's claims a two-size recipe tests, with a verdict (holds
here / does not hold here / this scale cannot decide), from hand-made stage records and test
predictions (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediswift.artifacts import Artifact
from mediswift.claims import (
    FAILS,
    HOLDS,
    LOSS_TOLERANCE,
    NOT_TESTED,
    UNDECIDED,
    claims,
    claims_apply,
    comparable_pairs,
    difference_verdict,
    gap_verdict,
    loss_verdict,
    metric_difference,
    overlap_verdict,
)
from mediswift.config import PipelineConfig, load_recipe
from mediswift.flops import flops_for
from mediswift.report import build_report

# Per-token training FLOPs of the sizes at vocabulary 8,000 and MSL 256 (mediswift.flops), as
# multiples of tiny dense's: what repro-claims trains.
FLOPS = {
    ("tiny", 0.0): 1.0,
    ("tiny", 0.5): 0.912,
    ("tiny", 0.75): 0.868,
    ("mini", 0.0): 1.236,
    ("mini", 0.5): 1.06,
    ("mini", 0.75): 0.972,
}
NON_EMBEDDING = {"tiny": 393_216, "mini": 786_432}


def variant(model: str, sparsity: float, loss: float, iso_of: float | None = None) -> dict:
    level = iso_of if iso_of is not None else sparsity
    name = (
        f"{model}-dense-iso{round(100 * iso_of)}"
        if iso_of is not None
        else f"{model}-dense"
        if sparsity == 0
        else f"{model}-s{round(100 * sparsity)}"
    )
    return {
        "name": name,
        "model": model,
        "sparsity": sparsity,
        "iso_flops_of": iso_of,
        "non_embedding_params": NON_EMBEDDING[model],
        "active_non_embedding_params": int(NON_EMBEDDING[model] * (1 - sparsity)),
        "final_val_loss": loss,
        "train_flops": 1e13 * FLOPS[(model, level)],
        "steps": 1000,
    }


def two_sizes(
    mini75: float = 5.0, tiny: tuple = (5.2, 5.23, 5.3), mini: tuple = (4.95, 4.97, 5.0)
) -> list[dict]:
    """tiny and mini at 0 / 50 / 75% and their iso-FLOPs baselines; `mini75` replaces mini-s75's
    validation loss (tiny dense's is tiny[0])."""
    mini = (mini[0], mini[1], mini75)
    out = [variant("tiny", s, loss) for s, loss in zip((0.0, 0.5, 0.75), tiny, strict=True)]
    out += [variant("tiny", 0.0, 5.27, iso_of=s) for s in (0.5, 0.75)]
    out += [variant("mini", s, loss) for s, loss in zip((0.0, 0.5, 0.75), mini, strict=True)]
    out += [variant("mini", 0.0, 5.02, iso_of=s) for s in (0.5, 0.75)]
    return out


def by_claim(rows, number: int, compared: str | None = None):
    return [r for r in rows if r.number == number and (compared is None or compared in r.compared)]


@pytest.mark.parametrize(
    ("diff", "verdict"),
    [
        (0.1, HOLDS),
        (-0.1, FAILS),
        (LOSS_TOLERANCE / 2, UNDECIDED),
        (-LOSS_TOLERANCE / 2, UNDECIDED),
    ],
)
def test_loss_verdict(diff: float, verdict: str) -> None:
    assert loss_verdict(diff) == verdict


@pytest.mark.parametrize(
    ("ci", "verdict"),
    [((0.01, 0.05), HOLDS), ((-0.05, -0.01), FAILS), ((-0.01, 0.03), UNDECIDED)],
)
def test_difference_verdict(ci, verdict: str) -> None:
    assert difference_verdict(ci) == verdict


@pytest.mark.parametrize(
    ("better", "worse", "verdict"),
    [
        ((0.60, 0.66), (0.50, 0.58), HOLDS),
        ((0.50, 0.58), (0.60, 0.66), FAILS),
        ((0.55, 0.62), (0.58, 0.64), UNDECIDED),
    ],
)
def test_overlap_verdict(better, worse, verdict: str) -> None:
    assert overlap_verdict(better, worse) == verdict


@pytest.mark.parametrize(
    ("gaps", "verdict"),
    [
        ([0.03, 0.09], HOLDS),  # worse than dense, more so at 75%
        ([0.05, 0.06], UNDECIDED),  # worse, but no visible growth
        ([0.09, 0.03], FAILS),  # the gap shrinks
        ([-0.05, 0.02], FAILS),  # sparse better than dense at 50%
        ([0.005, 0.01], UNDECIDED),
        ([], NOT_TESTED),
    ],
)
def test_gap_verdict(gaps: list[float], verdict: str) -> None:
    assert gap_verdict(gaps) == verdict


def test_the_larger_sparse_variants_at_comparable_flops_are_paired_with_the_smaller_dense() -> None:
    pairs = comparable_pairs(two_sizes())
    assert [(big["name"], small["name"]) for big, small, _ in pairs] == [
        ("mini-s50", "tiny-dense"),
        ("mini-s75", "tiny-dense"),
    ]
    assert pairs[1][2] == pytest.approx(0.972)


@pytest.mark.parametrize(
    ("mini75", "verdict"),
    [(5.0, HOLDS), (5.4, FAILS), (5.2 - LOSS_TOLERANCE / 2, UNDECIDED)],
)
def test_claim_1_larger_sparse_against_smaller_dense(mini75: float, verdict: str) -> None:
    (row,) = by_claim(claims(two_sizes(mini75)), 1, "mini-s75")
    assert row.verdict == verdict
    assert "none" in row.interval  # the losses have no interval, and the row says so


def test_claims_3_and_4_per_size() -> None:
    rows = claims(two_sizes(mini75=5.2, mini=(4.95, 5.05, 5.2)))
    (tiny,) = by_claim(rows, 3, "tiny-dense")
    (mini,) = by_claim(rows, 3, "mini-dense")
    assert tiny.verdict == HOLDS  # +0.03, then +0.10
    assert "+0.030 (50%)" in tiny.measured
    assert mini.verdict == HOLDS  # +0.10, +0.25
    iso = {r.compared: r.verdict for r in by_claim(rows, 4)}
    assert iso == {
        "tiny-s50 vs tiny-dense-iso50": HOLDS,  # 5.23 against 5.27
        "tiny-s75 vs tiny-dense-iso75": FAILS,  # 5.30 against 5.27
        "mini-s50 vs mini-dense-iso50": FAILS,  # 5.05 against 5.02
        "mini-s75 vs mini-dense-iso75": FAILS,
    }


def test_one_sparse_level_tests_only_that_sparse_is_worse() -> None:
    """repro-claims trains 0% and 75% only: claim 3 says its growth was not tested."""
    levels = [v for v in two_sizes() if v["sparsity"] != 0.5 and v.get("iso_flops_of") != 0.5]
    (tiny,) = by_claim(claims(levels), 3, "tiny-dense")
    assert tiny.compared == "tiny-s75 vs tiny-dense"
    assert tiny.measured == "gap +0.100 (75%); its growth: not tested (one sparse level)"
    assert tiny.verdict == HOLDS
    assert gap_verdict([-0.05]) == FAILS and gap_verdict([0.01]) == UNDECIDED


def test_one_size_is_not_a_claims_recipe() -> None:
    one = [v for v in two_sizes() if v["model"] == "tiny"]
    assert not claims_apply(one)
    assert claims_apply(two_sizes())
    (row,) = by_claim(claims(one), 1)
    assert row.verdict == NOT_TESTED


# --- claim 2: fine-tuning, a paired bootstrap over the test predictions ----------------------

N_TEST = 200


def _golds() -> list[str]:
    return ["yes" if i % 3 else "no" for i in range(N_TEST)]


def _preds(correct: float, seed: int) -> list[str]:
    """Predictions right on the first `correct` fraction of the examples (shifted by seed)."""
    golds, n = _golds(), round(correct * N_TEST)
    wrong = {(i + 7 * seed) % N_TEST for i in range(N_TEST - n)}
    return [("maybe" if i in wrong else g) for i, g in enumerate(golds)]


def _finetune(home: Path, accuracy: dict[str, float]) -> tuple[dict, list[dict]]:
    """A finetune manifest (one chosen point per seed) with its test predictions, and the
    evaluate stage's results, for PubMedQA (accuracy) with these accuracies per variant."""
    sweeps, results = [], []
    for name, acc in accuracy.items():
        points = []
        for seed in (0, 1, 2):
            unit = f"finetune/units/{name}-{seed}"
            (home / unit).mkdir(parents=True)
            rows = [
                {"split": "test", "id": f"q{i:03d}", "pred": p, "gold": g}
                for i, (p, g) in enumerate(zip(_preds(acc, seed), _golds(), strict=True))
            ]
            rows.append({"split": "dev", "id": "d0", "pred": "yes", "gold": "yes"})
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (home / unit / "predictions_score.jsonl").write_text(text)
            points.append({"unit": unit, "batch_size": 16, "lr": 2e-3, "seed": seed})
        sweeps.append({"variant": name, "task": "pubmedqa", "points": points})
        half = 0.07  # each model's own interval: wide enough to overlap at these differences
        results.append(
            {
                "variant": name,
                "task": "pubmedqa",
                "metric": "accuracy",
                "selected": {
                    "score": {
                        "batch_size": 16,
                        "lr": 2e-3,
                        "test_mean": acc,
                        "test_ci95": [acc - half, acc + half],
                    }
                },
            }
        )
    return {"sweeps": sweeps}, results


@pytest.mark.parametrize(
    ("mini75", "verdict"),
    [(0.72, HOLDS), (0.60, FAILS), (0.655, UNDECIDED)],
)
def test_claim_2_paired_difference(tmp_path: Path, mini75: float, verdict: str) -> None:
    finetune, results = _finetune(tmp_path, {"mini-s75": mini75, "tiny-dense": 0.65})

    def difference(better: dict, worse: dict, mode: str):
        return metric_difference(tmp_path, finetune, better, worse, mode)

    (row,) = by_claim(claims(two_sizes(), results, "score", difference), 2)
    assert "mini-s75 vs tiny-dense" in row.compared
    assert "paired bootstrap" in row.interval
    assert row.verdict == verdict


def test_claim_2_falls_back_to_each_models_own_interval(tmp_path: Path) -> None:
    """Without predictions a 7-point difference is undecided (the intervals overlap) where the
    paired interval decides it."""
    finetune, results = _finetune(tmp_path, {"mini-s75": 0.72, "tiny-dense": 0.65})
    (row,) = by_claim(claims(two_sizes(), results, "score"), 2)
    assert "each model's own" in row.interval
    assert row.verdict == UNDECIDED
    paired = metric_difference(tmp_path, finetune, results[0], results[1], "score")
    assert paired is not None and paired[0] > 0


def _home(home: Path, variants: list[dict], results: list[dict] | None = None) -> dict:
    stages = ["download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune"]
    arts = {s: Artifact(s, f"{s}-key", home / s / f"{s}-key") for s in [*stages, "evaluate"]}
    arts["pretrain"].ensure().write_manifest({"variants": variants})
    if results is not None:
        finetune, results = _finetune(home, {"mini-s75": 0.72, "tiny-dense": 0.65})
        arts["finetune"].ensure().write_manifest(finetune)
        arts["evaluate"].ensure().write_manifest(
            {"tables": {}, "results": results, "plot_mode": "score"}
        )
    return arts


def test_the_report_states_the_claims_only_for_two_sizes(tmp_path: Path) -> None:
    cfg = PipelineConfig(name="claims")
    home = tmp_path / "two"
    md, _ = build_report(cfg, home, _home(home, two_sizes(), results=[]))
    section = md.split("## The paper's claims at this scale", 1)[1].split("\n## ", 1)[0]
    assert "| 1 | at comparable training FLOPs" in section
    assert "mini-s75 vs tiny-dense (0.97x the FLOPs)" in section
    assert f"**{HOLDS}**" in section
    claim2 = [line for line in section.splitlines() if line.startswith("| 2 |")]
    assert claim2 and all("paired bootstrap" in line for line in claim2)
    # Pre-training only: the section is there, claim 2 is said not to be tested yet.
    home = tmp_path / "pretrained"
    md, _ = build_report(cfg, home, _home(home, two_sizes()))
    assert "claim 2 is not tested" in md
    # One size (the demo): no claims section at all.
    home = tmp_path / "one"
    one = [v for v in two_sizes() if v["model"] == "tiny"]
    md, _ = build_report(cfg, home, _home(home, one))
    assert "claims at this scale" not in md


def test_the_repro_claims_recipe_pairs_a_larger_sparse_model_with_tiny_dense() -> None:
    """repro-claims trains two sizes with iso-FLOPs baselines, and its larger size at 75% costs
    close to (and not more than) tiny dense's training FLOPs in the project's accounting."""
    cfg = load_recipe("repro-claims")
    pt = cfg.pretrain
    assert pt.sizes == ["tiny", "mini"] and pt.iso_flops_baselines
    assert {0.0, 0.75} <= set(pt.sparsity_levels)

    def flops(size: str, sparsity: float) -> float:
        return flops_for(size, sparsity, pt.tokens, cfg.vocab.vocab_size, pt.seq_len)

    assert 0.9 < flops("mini", 0.75) / flops("tiny", 0.0) <= 1.0
    assert "hoc" in cfg.finetune.tasks and len(cfg.finetune.seeds) == 3
