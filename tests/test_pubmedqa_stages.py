"""Multi-stage PubMedQA (Appendix A.2, Jin et al. 2019): a grid per stage, each stage's grid
starting from the unit chosen on the stage before (same seed), PQA-U pseudo-labelled by the
reasoning-free labeller chain (question + long answer, PQA-A -> PQA-L), the evaluated chain never
reading a long answer, one-stage tasks keyed as before, and a re-run that trains nothing.

PQA-A and PQA-U are not in the mirror: tiny files in their published formats are made from
PQA-L items (`ori_pqaa.json`-style JSON; the maintainers' Parquet for PQA-U)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from test_finetune import pqa, tok  # noqa: F401  (module fixtures: PQA-L splits, tokenizer)
from test_pubmedqa import write_hub_parquet

import mediswift.finetune.point as point_module
from mediswift.artifacts import Artifact
from mediswift.config import FinetuneConfig
from mediswift.finetune import keys as K
from mediswift.finetune.datasets import prepare_task, schedule_of
from mediswift.finetune.formats import read_examples
from mediswift.finetune.point import (
    dev_flags,
    load_finetuned,
    read_labels,
    run_labels,
    run_point,
)
from mediswift.finetune.pubmedqa import load_json
from mediswift.finetune.results import (
    TRAINED,
    LabelsManifest,
    PointManifest,
    StageRecord,
    StageUnitManifest,
)
from mediswift.finetune.schedule import Schedule
from mediswift.finetune.scoring import encode_examples, predict
from mediswift.finetune.task import Stage
from mediswift.manifests import StageChoice, TrackingSpec, TrainedVariant
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.text.tokenizer import Tokenizer
from mediswift.train.checkpoint import save_checkpoint

PQAA_FIELDS = ("QUESTION", "CONTEXTS", "LABELS", "MESHES", "LONG_ANSWER", "final_decision")
EVALUATED = ("pqa_a", "pqa_u", "pqa_l")  # the reasoning-required chain


def pqal_items(mirror_dir: Path) -> list[tuple[str, dict]]:
    return list(load_json(mirror_dir / "pubmedqa" / "ori_pqal.json").items())


def write_raw(mirror_dir: Path, raw: Path) -> dict[str, Path]:
    """PQA-L from the mirror; PQA-A as `ori_pqaa.json` (its fields only) and PQA-U as the
    maintainers' unlabelled Parquet, both from PQA-L items (700.. of the 1000, so mostly
    outside the capped PQA-L splits)."""
    items = pqal_items(mirror_dir)
    raw.mkdir(parents=True, exist_ok=True)
    pqaa = {p: {k: it[k] for k in PQAA_FIELDS} for p, it in items[700:740]}
    (raw / "ori_pqaa.json").write_text(json.dumps(pqaa))
    write_hub_parquet(raw / "pqa_unlabeled.parquet", items[760:784], labelled=False)
    for name in ("ori_pqal.json", "test_ground_truth.json"):
        (raw / name).write_bytes((mirror_dir / "pubmedqa" / name).read_bytes())
    return {
        "ori_pqal": raw / "ori_pqal.json",
        "test_ground_truth": raw / "test_ground_truth.json",
        "pqa_a": raw / "ori_pqaa.json",
        "pqa_u": raw / "pqa_unlabeled.parquet",
    }


def section(files: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {
        "grid": {"batch_sizes": [8], "learning_rates": [1e-3, 3e-4]},
        "epochs": 1,
        "pqa_a_epochs": 1,
        "pqa_u_epochs": 1,
        "max_train_examples": 16,
        "max_eval_examples": 8,
        "pqa_a_train_size": 30,
        "pqa_a_url": str(files["pqa_a"]),
        "pqa_u_url": str(files["pqa_u"]),
        **extra,
    }


def config(files: dict[str, Path], **extra: Any) -> FinetuneConfig:
    return FinetuneConfig(
        tasks={"pubmedqa": section(files, **extra)},
        seeds=[0, 1],
        max_len=64,
        eval_batch_size=8,
        patience=1,
    )


def test_schedule_of_the_data(mirror_dir: Path, tmp_path: Path, tok: Tokenizer) -> None:  # noqa: F811
    files = write_raw(mirror_dir, tmp_path / "raw")
    items = dict(pqal_items(mirror_dir))
    cfg = config(files)
    info = prepare_task(cfg.task("pubmedqa"), files, tmp_path / "data", tok)
    chain = [(s["name"], s.get("after"), s.get("labels_from")) for s in info["stages"]]
    assert chain == [
        ("rf_pqa_a", None, None),
        ("rf_pqa_l", "rf_pqa_a", None),
        ("pqa_a", None, None),
        ("pqa_u", "pqa_a", "rf_pqa_l"),
        ("pqa_l", "pqa_u", None),
    ]
    splits = {n: read_examples(tmp_path / "data" / f"{n}.jsonl") for n in info["counts"]}
    # The labeller reads question + long answer; every split of the evaluated chain (and the
    # test set) question + context only.
    for name, exs in splits.items():
        for e in exs:
            answer = items[e.id]["LONG_ANSWER"]
            assert (answer in e.source) == name.startswith("rf_"), (name, e.id)
            assert ("long answer:" in e.source) == name.startswith("rf_")
    # The labelled split and the split the labeller reads are the same items (same cap).
    assert [e.id for e in splits["rf_pqa_u"]] == [e.id for e in splits["pqa_u_train"]]
    assert all(e.label is None for e in splits["rf_pqa_u"] + splits["pqa_u_train"])
    assert [e.id for e in splits["rf_train"]] == [e.id for e in splits["train"]]
    assert [e.id for e in splits["rf_dev"]] == [e.id for e in splits["dev"]]
    assert info["counts"]["pqa_u_train"] == 16 and info["full_counts"]["pqa_u_train"] == 24
    # The cheap labeller: the reasoning-required PQA-A stage's model, no reasoning-free chain.
    cheap = prepare_task(
        config(files, pqa_u_labeller="pqa_a").task("pubmedqa"), files, tmp_path / "cheap", tok
    )
    assert [(s["name"], s.get("labels_from"), s.get("label_split")) for s in cheap["stages"]] == [
        ("pqa_a", None, None),
        ("pqa_u", "pqa_a", "pqa_u_train"),
        ("pqa_l", None, None),
    ]
    assert not any(name.startswith("rf_") for name in cheap["counts"])
    # Epochs: the paper's maximum (5) by default for PQA-A and PQA-U, early stopping on dev.
    default = FinetuneConfig(tasks={"pubmedqa": {"pqa_a_url": "a", "pqa_u_url": "u"}})
    task = default.task("pubmedqa")
    assert [task.stage_epochs(n) for n in ("rf_pqa_a", "pqa_a", "pqa_u")] == [5, 5, 5]


def test_one_stage_sweeps_keep_their_point_specs(tmp_path: Path) -> None:
    """A task without PQA-A/U (the demo) or another task: plain `PointSpec`s, keyed on the same
    fields as ever, and nothing for the schedule to plan."""
    cfg = FinetuneConfig(tasks={"pubmedqa": {}, "hoc": {}})
    home = tmp_path
    vocab = Artifact("vocab", "v", home / "vocab")
    vocab.ensure().write_manifest({"hash": "h"})
    for name in ("pubmedqa", "hoc"):
        (home / "raw" / name).mkdir(parents=True)
        (home / "raw" / name / "f").write_text(name)
    data = {t: K.data_spec(cfg, home, t, {"f": f"raw/{t}/f"}, vocab) for t in ("pubmedqa", "hoc")}
    variant = TrainedVariant.model_construct(name="v", checkpoint="pretrain/ckpt")
    tracking = TrackingSpec(uri=None, experiment="e")
    plans = K.sweep_units(cfg, home, [variant], data, vocab, tracking)
    assert not any(p.staged for p in plans)
    for plan in plans:
        assert all(type(s) is K.PointSpec for s, _ in plan.points)
        assert K.PointSpec.keyed_fields() == [
            "checkpoint", "tokenizer", "data", "task", "batch_size", "lr", "seed",
            "shared_settings", "task_settings", "modes",
        ]  # fmt: skip
    schedules = {t: [Stage(t, "train", "dev", 1)] for t in data}
    assert Schedule(home, plans, data, schedules, tracking, {}).next_units() == []


def test_stage_keys_follow_the_chain() -> None:
    base = dict(
        checkpoint="c", tokenizer="t", data="d", task="pubmedqa", batch_size=8, lr=1e-3,
        seed=0, shared_settings={}, task_settings={}, modes=["score"],
    )  # fmt: skip
    point = K.PointSpec(**base)
    stage = K.StageSpec(**base, phase="pqa_l", start="k1")
    assert stage.key != point.key
    assert K.StageSpec(**base, phase="pqa_l", start="k2").key != stage.key
    assert K.StageSpec(**base, phase="pqa_u", start="k1").key != stage.key
    assert K.StageSpec(**base, phase="pqa_l", start="k1", labels="l").key != stage.key
    # How the unit is reached (its folders) is not part of what it reads.
    assert K.StageSpec(**base, phase="pqa_l", start="k1", start_dir="x").key == stage.key


CHAIN = [
    Stage("rf_pqa_a", "rf_pqa_a_train", "rf_pqa_a_dev", 1),
    Stage("rf_pqa_l", "rf_train", "rf_dev", 1, after="rf_pqa_a"),
    Stage("pqa_a", "pqa_a_train", "pqa_a_dev", 1),
    Stage(
        "pqa_u", "pqa_u_train", "dev", 1, pseudo_label=True, after="pqa_a",
        labels_from="rf_pqa_l", label_split="rf_pqa_u",
    ),
    Stage("pqa_l", "train", "dev", 1, after="pqa_u"),
]  # fmt: skip


def test_degenerate_earlier_stages_and_labellers_are_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As the last stage's choice is, an earlier stage's choice passes over a (batch, lr) with
    a seed degenerate on dev while a clean one exists, and says how many seeds of its choice
    are degenerate; a labeller whose pseudo labels are one class is named. The units' results
    are made up here (the schedule reads only their manifests)."""
    cfg = FinetuneConfig(
        tasks={"pubmedqa": {"grid": {"batch_sizes": [8], "learning_rates": [1e-3, 3e-4]},
                            "pqa_a_url": "a", "pqa_u_url": "u"}},
        seeds=[0, 1],
    )  # fmt: skip
    home = tmp_path
    vocab = Artifact("vocab", "v", home / "vocab")
    vocab.ensure().write_manifest({"hash": "h"})
    (home / "raw").mkdir()
    (home / "raw" / "f").write_text("pubmedqa")
    data = {"pubmedqa": K.data_spec(cfg, home, "pubmedqa", {"f": "raw/f"}, vocab)}
    variant = TrainedVariant.model_construct(name="v", checkpoint="pretrain/ckpt")
    tracking = TrackingSpec(uri=None, experiment="e")
    (plan,) = K.sweep_units(cfg, home, [variant], data, vocab, tracking)
    schedule = Schedule(home, [plan], data, {"pubmedqa": CHAIN}, tracking, {})

    def made_up(spec: Any) -> StageUnitManifest | LabelsManifest:
        if isinstance(spec, K.LabelSpec):  # seed 0's labeller says "yes" to everything
            return made_up_labels(spec, "constant" if spec.seed == 0 else None)
        # pqa_a: the better lr has a constant seed; rf_pqa_l: every lr has one
        bad = (spec.phase == "pqa_a" and spec.lr == 1e-3 and spec.seed == 1) or (
            spec.phase == "rf_pqa_l" and spec.seed == 0
        )
        dev = 0.9 if spec.lr == 1e-3 else 0.5
        return made_up_stage(spec, dev, {"dev_score": "constant"} if bad else {})

    with caplog.at_level(logging.WARNING):
        while units := schedule.next_units():
            schedule.record({s.key: made_up(s) for s, _ in units})
    assert schedule.finished()
    chosen = {c["stage"]: StageChoice(**c) for c in plan.stages}
    a = chosen["pqa_a"]
    assert (a.lr, a.degenerate_seeds, a.avoided_degenerate) == (3e-4, 0, 1)
    rf_a = chosen["rf_pqa_a"]
    assert (rf_a.lr, rf_a.degenerate_seeds, rf_a.avoided_degenerate) == (1e-3, 0, 0)
    # Every choice degenerate: the best is still chosen, and flagged.
    rf_l = chosen["rf_pqa_l"]
    assert (rf_l.lr, rf_l.degenerate_seeds, rf_l.avoided_degenerate) == (1e-3, 1, 0)
    assert rf_l.degenerate_labels == {"0": "constant"}
    assert chosen["pqa_u"].degenerate_labels == {}
    assert "stage rf_pqa_l: 1 of 2 seeds" in caplog.text
    assert "labeller rf_pqa_l of seed 0 gives degenerate pseudo labels (constant)" in caplog.text


def made_up_labels(spec: K.LabelSpec, degenerate: str | None) -> LabelsManifest:
    """A labels unit's result, as far as the schedule reads it."""
    return LabelsManifest(
        task=spec.task, variant=spec.variant, seed=spec.seed, split=spec.split,
        labeller=spec.labeller_dir, mode="score", items=1, labelled=1, counts={},
        degenerate=degenerate, labels="labels.jsonl",
    )  # fmt: skip


def made_up_stage(spec: K.StageSpec, dev: float, degenerate: dict[str, str]) -> StageUnitManifest:
    """An earlier stage unit's result, as far as the schedule reads it."""
    record = StageRecord(
        name=spec.phase, train=1, dev=1, best_epoch=1, best_dev=dev, steps=1,
        stopped_early=False, history=[],
    )  # fmt: skip
    return StageUnitManifest(
        variant=spec.variant, task=spec.task, metric="accuracy", batch_size=spec.batch_size,
        lr=spec.lr, seed=spec.seed, n_prompt=1, max_len=8, source_budget=1, max_new_tokens=1,
        reactivated_weights=0, params=1, stages=[record], steps=1,
        metrics={"dev_score": dev}, degenerate=degenerate, checkpoint="checkpoint",
    )  # fmt: skip


def test_an_earlier_stage_flags_its_dev_predictions_as_the_last_does() -> None:
    assert dev_flags(["yes", "yes", None], "generate") == {"dev_generate": "constant"}
    assert dev_flags([None, None], "score") == {"dev_score": "no label"}
    assert dev_flags(["yes", "no"], "score") == {}
    assert dev_flags([], "score") == {}  # no epoch evaluated: nothing to judge


def home_with_data(
    mirror_dir: Path, home: Path, tk: Tokenizer, cfg_extra: dict[str, Any] | None = None
) -> tuple[FinetuneConfig, dict, dict, list[K.SweepUnits], TrackingSpec]:
    """A home with the raw files, a vocab unit, a tiny checkpoint and the prepared data."""
    files = write_raw(mirror_dir, home / "raw" / "pubmedqa")
    cfg = config(files, **(cfg_extra or {}))
    vocab = Artifact("vocab", "v", home / "vocab")
    vocab.ensure().write_manifest({"hash": tk.hash})
    rel = {role: str(p.relative_to(home)) for role, p in files.items()}
    spec, unit = K.data_spec(cfg, home, "pubmedqa", rel, vocab)
    if not unit.done():
        info = prepare_task(cfg.task("pubmedqa"), files, unit.ensure().path, tk)
        unit.write_manifest(info)
    torch.manual_seed(0)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=tk.vocab_size, block_size=64))
    if not (home / "pretrain" / "ckpt").is_dir():
        save_checkpoint(home / "pretrain" / "ckpt", lm)
    variant = TrainedVariant.model_construct(name="tiny", checkpoint="pretrain/ckpt")
    tracking = TrackingSpec(uri=None, experiment="e")
    data = {"pubmedqa": (spec, unit)}
    plans = K.sweep_units(cfg, home, [variant], data, vocab, tracking)
    return cfg, data, {"pubmedqa": schedule_of(unit.manifest())}, plans, tracking


def run_schedule(
    home: Path, tk: Tokenizer, schedule: Schedule, on_unit: Any = None
) -> list[list[str]]:
    """Run every round as the flow does (here in-process); returns each round's unit names."""
    rounds = []
    while units := schedule.next_units():
        rounds.append(sorted(s.name for s, _ in units))
        results = {}
        for spec, unit in units:
            K.write_spec(unit, spec)
            if on_unit:
                on_unit(spec)
            if isinstance(spec, K.LabelSpec):
                results[spec.key] = run_labels(unit, spec, home, tk)
            else:
                results[spec.key] = run_point(unit, spec, home, tk)
        schedule.record(results)
    return rounds


@pytest.mark.slow
def test_stage_grids_chain_label_and_rerun_trains_nothing(
    mirror_dir: Path,
    tmp_path: Path,
    tok: Tokenizer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread,
) -> None:
    home = tmp_path / "home"
    cfg, data, data_results, plans, tracking = home_with_data(mirror_dir, home, tok)
    (plan,) = plans
    assert plan.staged
    # Record what every unit encodes: the sources its model reads.
    read: dict[str, list[str]] = {}
    real_encode = point_module.encode_examples

    def spy(tok_: Any, exs: list, budget: int, ids: Any = None) -> list:
        read.setdefault(current[0], []).extend(e.source for e in exs)
        return real_encode(tok_, exs, budget, ids)

    current = [""]
    monkeypatch.setattr(point_module, "encode_examples", spy)
    schedule = Schedule(home, plans, data, data_results, tracking, {plan.key: None})

    def on_unit(spec: Any) -> None:
        current[0] = getattr(spec, "phase", "labels")

    rounds = run_schedule(home, tok, schedule, on_unit)
    assert schedule.finished()
    # Round 1: both chains' first stages from the pre-trained model (2 lr x 2 seeds each);
    # then the labeller's PQA-L grid, the labels (one per seed), PQA-U, PQA-L.
    assert [len(r) for r in rounds] == [8, 4, 2, 4, 4]
    assert all("-labels-rf_pqa_u-" in n for n in rounds[2])
    chosen = {c["stage"]: c for c in plan.stages}
    assert list(chosen) == ["rf_pqa_a", "rf_pqa_l", "pqa_a", "pqa_u"]

    units = {s.key: (s, u) for s, u in plan.points}
    assert {s.phase for s, _ in units.values()} == {"pqa_l"} and len(units) == 4
    by_dir = {}
    for stage in ("rf_pqa_a", "rf_pqa_l", "pqa_a", "pqa_u"):
        for rel_dir in chosen[stage]["units"]:
            spec = K.read_spec(Artifact("finetune", "", home / rel_dir), K.PointSpec)
            by_dir[rel_dir] = spec

    def chosen_unit(stage: str, seed: int) -> K.StageSpec:
        (d,) = [d for d in chosen[stage]["chosen"] if by_dir[d].seed == seed]
        return by_dir[d]

    for stage in ("rf_pqa_a", "rf_pqa_l", "pqa_a", "pqa_u"):
        c = chosen[stage]
        assert all((by_dir[d].batch_size, by_dir[d].lr) == (8, c["lr"]) for d in c["chosen"])
        # The choice is the best mean over seeds of the units' best dev metric.
        means = {}
        for d in c["units"]:
            m = TRAINED.validate_json((home / d / "manifest.json").read_bytes())
            means.setdefault(by_dir[d].lr, []).append(m.best.best_dev)
        assert c["dev_mean"] == pytest.approx(max(sum(v) / len(v) for v in means.values()))
    # Every stage unit starts from its stage's `after` unit chosen for the same seed ...
    after = {"rf_pqa_l": "rf_pqa_a", "pqa_u": "pqa_a", "pqa_l": "pqa_u"}
    all_units = list(by_dir.values()) + [s for s, _ in units.values()]
    for spec in all_units:
        if spec.phase in after:
            start = chosen_unit(after[spec.phase], spec.seed)
            assert spec.start == start.key
            assert spec.start_dir == K.rel(start.artifact(home).path, home)
        else:
            assert spec.start == "" and spec.start_dir == ""
    # ... and loads its weights: PQA-L's epoch-0 dev metric (the same PQA-L dev set as PQA-U's)
    # is the best dev metric of the chosen PQA-U unit of its seed.
    for spec, unit in units.values():
        m = TRAINED.validate_python(unit.manifest())
        start = chosen_unit("pqa_u", spec.seed)
        s_m = TRAINED.validate_python(start.artifact(home).manifest())
        assert m.stages[0].history[0]["dev_metric"] == pytest.approx(s_m.best.best_dev)
        assert set(m.metrics) >= {"dev_generate", "test_generate", "dev_score", "test_score"}
        assert isinstance(m, PointManifest) and m.phase == "pqa_l"
    # Pseudo labels come from the reasoning-free labeller chosen on the labeller's PQA-L dev,
    # one labels unit per seed, and are its predictions on question + long answer.
    schedule_ = data_results["pubmedqa"]
    rf_u = read_examples(data["pubmedqa"][1].path / "rf_pqa_u.jsonl")
    assert all("long answer:" in e.source for e in rf_u)
    for d in chosen["rf_pqa_l"]["labels"]:
        labels_unit = Artifact("finetune", "", home / d)
        lspec = K.read_spec(labels_unit, K.LabelSpec)
        labeller = chosen_unit("rf_pqa_l", lspec.seed)
        assert lspec.labeller == labeller.key and lspec.split == "rf_pqa_u"
        labels = read_labels(home / d)
        assert set(labels) == {e.id for e in rf_u}  # constrained scoring labels every item
        model = load_finetuned(labeller.artifact(home).path / "checkpoint")
        budget = labeller.artifact(home).manifest()["source_budget"]
        preds, _ = predict(
            model, cfg.task("pubmedqa"), tok, encode_examples(tok, rf_u, budget), "score", 8
        )
        assert [labels[e.id] for e in rf_u] == preds
        # The PQA-U units of that seed train on exactly these labels.
        for spec in all_units:
            if spec.phase == "pqa_u" and spec.seed == lspec.seed:
                assert spec.labels == lspec.key
                made = spec.artifact(home).manifest()["stages"][0]["pseudo_labels"]
                assert made == labels_unit.manifest()["counts"]
                assert sum(made.values()) == 16  # every (capped) PQA-U item
    assert schedule_[-1].name == "pqa_l"
    # The evaluated chain never read a long answer; the labeller chain always did.
    assert set(read) == {"rf_pqa_a", "rf_pqa_l", "labels", *EVALUATED}
    answers = [it["LONG_ANSWER"] for _, it in pqal_items(mirror_dir)]
    for phase, sources in read.items():
        joined = "\n".join(sources)
        if phase in EVALUATED:
            assert "long answer:" not in joined
            assert not any(a in joined for a in answers), phase
        else:
            assert all("long answer:" in s for s in sources), phase

    # A re-run plans the same units, finds them all done and hands out none.
    stamps = {
        p: p.stat().st_mtime_ns for p in (home / "finetune" / "units").glob("*/manifest.json")
    }
    _, data2, results2, plans2, _ = home_with_data(mirror_dir, home, tok)
    again = Schedule(home, plans2, data2, results2, tracking, {plans2[0].key: None})
    assert again.next_units() == [] and again.finished()
    assert [s.key for s, _ in plans2[0].points] == [s.key for s, _ in plan.points]
    assert plans2[0].stages == plan.stages
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(stamps) == 5 * 4 + 2 + 1  # 5 stages x 4 points, 2 labels units, the data


@pytest.mark.slow
def test_multistage_sweep_in_the_flow(prefect_harness, mirror_dir: Path, tmp_path: Path) -> None:
    """The finetune flow runs the schedule round by round, evaluate reads the last stage's
    units as the sweep's points, and a re-run of the stage trains nothing."""
    from finetune_fixtures import make_home

    from flows.pipeline import mediswift
    from flows.registry import plan as stage_plan
    from mediswift.config import load_recipe

    files = write_raw(mirror_dir, tmp_path / "files")
    recipe_text = f"""name: finetune-stages-test
finetune:
  seeds: [0]
  patience: 1
  max_len: 64
  eval_batch_size: 8
  concurrency: 2
  tasks:
    pubmedqa:
      grid: {{batch_sizes: [8], learning_rates: [1.0e-3]}}
      epochs: 1
      pqa_a_epochs: 1
      pqa_u_epochs: 1
      max_train_examples: 16
      max_eval_examples: 8
      pqa_a_train_size: 30
      pqa_a_url: {files["pqa_a"]}
      pqa_u_url: {files["pqa_u"]}
"""
    recipe, home = make_home(tmp_path, mirror_dir, recipe_text)
    mediswift(recipe=str(recipe), stages=["finetune", "evaluate"], home=str(home))
    arts = stage_plan(load_recipe(str(recipe)), home)
    ft = arts["finetune"].manifest()
    assert [(s["variant"], s["task"]) for s in ft["sweeps"]] == [
        ("tiny-dense", "pubmedqa"),
        ("tiny-s50", "pubmedqa"),
    ]
    for s in ft["sweeps"]:
        assert [c["stage"] for c in s["stages"]] == ["rf_pqa_a", "rf_pqa_l", "pqa_a", "pqa_u"]
        (p,) = s["points"]
        assert json.loads((home / p["unit"] / "manifest.json").read_text())["phase"] == "pqa_l"
        assert (home / p["unit"] / "checkpoint" / "model.safetensors").is_file()
        assert len(s["stages"][1]["labels"]) == 1
    ev = arts["evaluate"].manifest()
    assert {r["variant"] for r in ev["results"]} == {"tiny-dense", "tiny-s50"}
    units = sorted((home / "finetune" / "units").glob("*/manifest.json"))
    assert len(units) == 1 + 2 * (5 + 1)  # the data, and per variant 5 stages + 1 labels
    stamps = [u.stat().st_mtime_ns for u in units]
    arts["finetune"].manifest_path.unlink()
    mediswift(recipe=str(recipe), stages=["finetune"], home=str(home))
    assert [u.stat().st_mtime_ns for u in units] == stamps
    assert arts["finetune"].manifest()["sweeps"] == ft["sweeps"]
