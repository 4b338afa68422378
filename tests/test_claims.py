"""The claims section: each of the paper's claims a recipe with two or more sizes tests, with a
verdict (holds here / does not hold here / this scale cannot decide), from hand-made stage records
and test predictions (no pipeline run): pairing by active non-embedding parameters, the
precondition gate, seed noise and the hierarchical bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.registry import plan
from mediswift.arms import (
    FAILS,
    HOLDS,
    UNDECIDED,
    arms,
    hierarchical_difference_interval,
    loss_verdict,
    metric_difference,
    seed_sd,
)
from mediswift.artifacts import Artifact
from mediswift.baselines import planned_variants
from mediswift.claims import (
    NO_CAPACITY,
    NOT_TESTED,
    claims,
    claims_apply,
    difference_verdict,
    gap_verdict,
    pairs,
)
from mediswift.config import PipelineConfig, load_recipe
from mediswift.dry_run import dry_run, planned_records
from mediswift.report import build_report

# Active non-embedding parameters (matrices only, for round numbers) and per-token FLOPs as
# multiples of micro dense's (vocabulary 8,000, MSL 256): the repro-claims ladder.
LAYERS = {"micro": 1, "tiny": 2, "mini": 4}
FLOPS = {("micro", 0.0): 1.0, ("tiny", 0.5): 1.03, ("mini", 0.75): 1.10, ("mini", 0.0): 1.40,
         ("tiny", 0.0): 1.24}  # fmt: skip
SPREAD = (-0.01, 0.01)  # two seeds: each arm's losses are its mean +- 0.01 (sd 0.0141)


def variant(model: str, sparsity: float, loss: float, seed: int = 0, seeds: int = 2) -> dict:
    arm = f"{model}-dense" if sparsity == 0 else f"{model}-s{round(100 * sparsity)}"
    dense = LAYERS[model] * 196_608
    return {
        "name": f"{arm}-seed{seed}" if seeds > 1 else arm,
        "arm": arm,
        "seed": seed,
        "model": model,
        "sparsity": sparsity,
        "iso_flops_of": None,
        "non_embedding_params": dense,
        "active_non_embedding_params": round(dense * (1 - sparsity)),
        "final_val_loss": loss,
        "train_flops": 1e13 * FLOPS[(model, sparsity)],
        "flops_ratio": 1.0 - 0.5 * sparsity,
    }


def ladder(micro: float = 5.0, mini75: float = 4.9, mini: float = 4.8, tiny50: float = 4.95):
    """The repro-claims arms, two seeds each around these mean losses (mini dense: one seed)."""
    out = []
    for model, s, loss in (("micro", 0.0, micro), ("tiny", 0.5, tiny50), ("mini", 0.75, mini75)):
        out += [variant(model, s, loss + d, seed) for seed, d in enumerate(SPREAD)]
    return out + [variant("mini", 0.0, mini, seeds=1)]


def by_claim(rows, number: int, compared: str | None = None):
    return [r for r in rows if r.number == number and (compared is None or compared in r.compared)]


@pytest.mark.parametrize(
    ("ahead", "se", "verdict"),
    [(0.1, 0.02, HOLDS), (-0.1, 0.02, FAILS), (0.03, 0.02, UNDECIDED), (0.5, None, UNDECIDED)],
)
def test_loss_verdict_is_decided_beyond_two_standard_errors(ahead, se, verdict) -> None:
    assert loss_verdict(ahead, se) == verdict


@pytest.mark.parametrize(
    ("ci", "verdict"), [((0.01, 0.05), HOLDS), ((-0.05, -0.01), FAILS), ((-0.01, 0.02), UNDECIDED)]
)
def test_difference_verdict(ci, verdict: str) -> None:
    assert difference_verdict(ci) == verdict


@pytest.mark.parametrize(
    ("gaps", "tol", "verdict"),
    [([0.03, 0.14], 0.02, HOLDS), ([0.03, 0.02], 0.001, FAILS), ([-0.05], 0.02, FAILS),
     ([0.01], 0.02, UNDECIDED), ([0.3], None, UNDECIDED), ([], 0.02, NOT_TESTED)],
)  # fmt: skip
def test_gap_verdict(gaps, tol, verdict: str) -> None:
    assert gap_verdict(gaps, tol) == verdict


def test_seed_noise_is_pooled_over_arms_with_two_seeds() -> None:
    sd, df = seed_sd(arms(ladder()))
    assert df == 3 and sd == pytest.approx(0.01414, abs=1e-4)  # mini dense's one seed: no df
    one_seed = [v for v in ladder() if v["seed"] == 0]
    assert seed_sd(arms(one_seed)) == (None, 0)


def test_pairs_are_by_active_non_embedding_parameters_with_the_flops_ratio() -> None:
    found = {(p.big.name, p.small.name): p for p in pairs(arms(ladder()))}
    assert set(found) == {("tiny-s50", "micro-dense"), ("mini-s75", "micro-dense")}
    p = found[("mini-s75", "micro-dense")]
    assert p.equal_active and p.flops_ratio == pytest.approx(1.10)
    assert p.gate is not None and p.gate.name == "mini-dense"
    # tiny dense at mini-s75's FLOPs but twice its active parameters: the iso-FLOPs variant.
    iso = pairs(arms([variant("tiny", 0.0, 5.0, seeds=1), variant("mini", 0.75, 4.9, seeds=1)]))
    assert [(p.big.name, p.small.name, p.equal_active) for p in iso] == [
        ("mini-s75", "tiny-dense", False)
    ]
    (row,) = by_claim(claims([variant("tiny", 0.0, 5.0, seeds=1),
                              variant("mini", 0.75, 4.9, seeds=1)]), 1)  # fmt: skip
    assert row.claim.startswith("iso-FLOPs variant (not the paper's comparison)")


def test_claim_1_cannot_decide_when_the_larger_dense_model_is_worse() -> None:
    """The precondition: mini dense worse than micro dense means capacity does not pay, so a
    sparse mini far ahead of micro dense still decides nothing."""
    rows = by_claim(claims(ladder(micro=5.0, mini75=4.5, mini=5.1)), 1)
    assert len(rows) == 2 and all(r.verdict == NO_CAPACITY for r in rows)
    assert "precondition mini-dense vs micro-dense" in rows[0].measured


@pytest.mark.parametrize(("mini75", "verdict"), [(4.9, HOLDS), (5.1, FAILS), (4.99, UNDECIDED)])
def test_claim_1_reads_the_sparse_result_once_capacity_pays(mini75: float, verdict: str) -> None:
    (row,) = by_claim(claims(ladder(micro=5.0, mini75=mini75, mini=4.8)), 1, "mini-s75")
    assert row.verdict == verdict
    assert "+-" in row.interval and "seeds [0, 1] vs seeds [0, 1]" in row.measured


def test_one_seed_decides_no_loss_difference() -> None:
    one = [v for v in ladder(mini75=4.0, mini=4.0) if v["seed"] == 0]
    assert {r.verdict for r in by_claim(claims(one), 1)} == {NO_CAPACITY}
    assert all("no spread measured" in r.interval for r in by_claim(claims(one), 1))


def test_claim_3_at_equal_steps_uses_the_measured_noise() -> None:
    (row,) = by_claim(claims(ladder(mini75=4.9, mini=4.8)), 3)
    assert row.compared == "mini-s75 vs mini-dense" and row.verdict == HOLDS  # +0.1 nats


def test_one_size_is_not_a_claims_recipe() -> None:
    assert not claims_apply(
        [variant("tiny", 0.0, 5.0, seeds=1), variant("tiny", 0.5, 5.1, seeds=1)]
    )
    assert claims_apply(ladder())


# --- claim 2: fine-tuning, a hierarchical bootstrap over seeds and test documents ------------

N_TEST = 200


def _golds() -> list[str]:
    return ["yes" if i % 3 else "no" for i in range(N_TEST)]


def _preds(correct: float, seed: int) -> list[str]:
    """Predictions right on a `correct` fraction of the examples (which ones shift by seed)."""
    golds, n = _golds(), round(correct * N_TEST)
    wrong = {(i + 7 * seed) % N_TEST for i in range(N_TEST - n)}
    return [("maybe" if i in wrong else g) for i, g in enumerate(golds)]


def _finetune(home: Path, accuracy: dict[str, float]) -> tuple[dict, list[dict]]:
    """A finetune manifest (one fine-tuning seed per pre-training seed) with its test
    predictions, and the evaluate stage's results, for PubMedQA, per arm's accuracy."""
    sweeps, results = [], []
    for arm, acc in accuracy.items():
        for seed in (0, 1) if arm != "mini-dense" else (0,):
            name = f"{arm}-seed{seed}" if arm != "mini-dense" else arm
            unit = f"finetune/units/{name}"
            (home / unit).mkdir(parents=True)
            rows = [
                {"split": "test", "id": f"q{i:03d}", "pred": p, "gold": g}
                for i, (p, g) in enumerate(zip(_preds(acc, seed), _golds(), strict=True))
            ]
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (home / unit / "predictions_score.jsonl").write_text(text)
            point = {"unit": unit, "batch_size": 16, "lr": 2e-3, "seed": 0}
            sweeps.append({"variant": name, "task": "pubmedqa", "points": [point]})
            chosen = {"batch_size": 16, "lr": 2e-3, "test_mean": acc}
            results.append({"variant": name, "task": "pubmedqa", "metric": "accuracy",
                            "selected": {"score": chosen}})  # fmt: skip
    return {"sweeps": sweeps}, results


@pytest.mark.parametrize(
    ("mini75", "mini", "verdict"),
    [(0.75, 0.80, HOLDS), (0.55, 0.80, FAILS), (0.66, 0.80, UNDECIDED), (0.75, 0.60, NO_CAPACITY)],
)
def test_claim_2_hierarchical_difference_and_downstream_gate(tmp_path, mini75, mini, verdict):
    finetune, results = _finetune(
        tmp_path, {"mini-s75": mini75, "micro-dense": 0.65, "mini-dense": mini}
    )
    rows = claims(ladder(), results, "score", metric_difference(tmp_path, finetune))
    (row,) = by_claim(rows, 2, "mini-s75 vs micro-dense")
    assert "hierarchical bootstrap: 2 pre-training x 1 fine-tuning seeds" in row.interval
    assert row.verdict == verdict


def test_the_hierarchical_interval_widens_with_seed_spread() -> None:
    """Seeds that disagree widen the interval that documents alone would give."""
    golds = _golds()

    def metric(preds: list, golds: list) -> float:  # accuracy
        return sum(a == b for a, b in zip(preds, golds, strict=True)) / len(golds)

    steady = [[_preds(0.7, 0)], [_preds(0.7, 0)]]
    spread = [[_preds(0.6, 0)], [_preds(0.8, 1)]]
    base = [[_preds(0.65, 3)]]
    lo1, hi1 = hierarchical_difference_interval(metric, steady, base, golds, resamples=400)
    lo2, hi2 = hierarchical_difference_interval(metric, spread, base, golds, resamples=400)
    assert hi2 - lo2 > hi1 - lo1


def _home(home: Path, variants: list[dict], finetuned: bool = False) -> dict:
    stages = ["download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune"]
    arts = {s: Artifact(s, f"{s}-key", home / s / f"{s}-key") for s in [*stages, "evaluate"]}
    arts["pretrain"].ensure().write_manifest({"variants": variants})
    if finetuned:
        finetune, results = _finetune(
            home, {"mini-s75": 0.75, "micro-dense": 0.65, "mini-dense": 0.8}
        )
        arts["finetune"].ensure().write_manifest(finetune)
        arts["evaluate"].ensure().write_manifest(
            {"tables": {}, "results": results, "plot_mode": "score"}
        )
    return arts


def test_the_report_states_the_claims_with_seeds_and_intervals(tmp_path: Path) -> None:
    cfg = PipelineConfig(name="claims")
    home = tmp_path / "two"
    md, _ = build_report(cfg, home, _home(home, ladder(), finetuned=True))
    section = md.split("## The paper's claims at this scale", 1)[1].split("\n## ", 1)[0]
    assert "| 1 | at equal active non-embedding parameters" in section
    assert "mini-s75 vs micro-dense (" in section and "1.10x the FLOPs" in section
    assert "pooled over the arms with two or more seeds (3 degrees of freedom)" in section
    assert "A 1-layer model (micro) forms no induction heads" in section
    claim2 = [line for line in section.splitlines() if line.startswith("| 2 |")]
    assert claim2 and all("hierarchical bootstrap" in line for line in claim2)
    # rows of one claim (task and convention) together, the claim named on its first row
    named = [line.split("|")[2].strip() for line in claim2]
    assert named[0] and named.count("") == len(named) - len(set(filter(None, named)))
    home = tmp_path / "pretrained"
    md, _ = build_report(cfg, home, _home(home, ladder()))
    assert "claim 2 is not tested" in md


def test_the_repro_claims_recipe_compares_equal_active_parameters_with_seeds(tmp_path) -> None:
    cfg = load_recipe("repro-claims")
    planned = planned_variants(cfg.pretrain, cfg.vocab.vocab_size)
    found = pairs(arms(planned_records(cfg, planned)))
    assert found and all(p.equal_active and p.gate is not None for p in found)
    assert all(len(p.big.seeds) >= 2 and len(p.small.seeds) >= 2 for p in found)
    assert {p.big.name for p in found} == {"tiny-s50", "mini-s75"}
    # each arm trains at its own pilot-chosen peak rate (part of the variant's settings, so
    # of its key)
    rates = {p.arm: p.config(cfg.pretrain).lr for p in planned}
    assert rates == {"micro-dense": 4e-3, "tiny-s50": 2e-3, "mini-s75": 2e-3, "mini-dense": 2e-3}
    home = tmp_path / "home"
    text = dry_run(cfg, home, plan(cfg, home), ["pretrain"])
    assert "compared (equal active non-embedding parameters): mini-s75 vs micro-dense" in text
    assert "seeds [0, 1]" in text and "1.10x the FLOPs" in text


def test_claim_2_rows_keep_each_convention_together(tmp_path: Path, monkeypatch) -> None:
    """With a second convention, claim 2's rows come per convention (both pairs each), so the
    table's claim text, written on a block's first row only, heads the right rows."""
    from mediswift.finetune.pubmedqa import PubMedQA
    from mediswift.finetune.task import ExtraMetric

    def errors(preds: list, golds: list) -> float:  # another convention: 1 - accuracy
        return 1 - sum(a == b for a, b in zip(preds, golds, strict=True)) / len(golds)

    monkeypatch.setattr(PubMedQA, "extra_metrics", {"err": ExtraMetric("error rate", errors)})
    arms_acc = {"mini-s75": 0.75, "tiny-s50": 0.7, "micro-dense": 0.65, "mini-dense": 0.8}
    finetune, results = _finetune(tmp_path, arms_acc)
    rows = by_claim(claims(ladder(), results, "score", metric_difference(tmp_path, finetune)), 2)
    assert [("error rate" in r.claim, r.compared.split(" ")[0]) for r in rows] == [
        (False, "tiny-s50"), (False, "mini-s75"), (True, "tiny-s50"), (True, "mini-s75")
    ]  # fmt: skip
