"""What re-keys a fine-tuning unit: only the settings that can change its result."""

from __future__ import annotations

from pathlib import Path

from mediswift.artifacts import Artifact
from mediswift.config import FinetuneConfig
from mediswift.finetune import keys as K
from mediswift.finetune.keys import PointSpec, result_settings
from mediswift.finetune.point import settings_for
from mediswift.manifests import TrackingSpec, TrainedVariant


def test_task_settings_only_touch_their_task() -> None:
    base = FinetuneConfig()
    hoc_longer = FinetuneConfig(tasks={"pubmedqa": {}, "hoc": {"epochs": 7}})
    assert result_settings(base, "pubmedqa") == result_settings(hoc_longer, "pubmedqa")
    assert result_settings(base, "hoc") != result_settings(hoc_longer, "hoc")
    pqa_prompt = FinetuneConfig(tasks={"pubmedqa": {"prompt_tokens": 3}, "hoc": {}})
    assert result_settings(base, "hoc") == result_settings(pqa_prompt, "hoc")
    assert result_settings(base, "pubmedqa") != result_settings(pqa_prompt, "pubmedqa")


def test_shared_settings_touch_both_and_scheduling_none() -> None:
    base = FinetuneConfig()
    patient = FinetuneConfig(patience=9)
    busy = FinetuneConfig(
        concurrency=8,
        seeds=[5],
        tasks={"pubmedqa": {"grid": {"batch_sizes": [2], "learning_rates": [0.1]}}, "hoc": {}},
    )
    for task in ("pubmedqa", "hoc"):
        assert result_settings(base, task) != result_settings(patient, task)
        assert result_settings(base, task) == result_settings(busy, task)


def test_the_trainer_takes_the_section_and_the_schedule_its_epochs_from_the_settings():
    cfg = FinetuneConfig.model_validate(
        {
            "patience": 5,
            "grad_clip": 0.5,
            "tasks": {
                "pubmedqa": {"epochs": 4, "pqa_a_epochs": 2, "pqa_u_epochs": 3},
                "hoc": {"epochs": 7},
            },
        }
    )
    s = settings_for(cfg, 8, 1e-3, 1, 16, "score")
    assert (s.patience, s.grad_clip, s.betas, s.loss_on) == (5, 0.5, cfg.betas, cfg.loss_on)
    assert (s.batch_size, s.lr, s.seed, s.max_new_tokens) == (8, 1e-3, 1, 16)
    pqa, hoc = cfg.task("pubmedqa"), cfg.task("hoc")
    assert [pqa.stage_epochs(n) for n in ("pqa_a", "pqa_u", "pqa_l")] == [2, 3, 4]
    assert hoc.stage_epochs(hoc.final_stage().name) == 7


def plan_points(cfg: FinetuneConfig, home: Path) -> list[PointSpec]:
    """Every grid point of a one-variant plan of `cfg` (fixed raw files and tokenizer)."""
    vocab = Artifact("vocab", "v", home / "vocab")
    vocab.ensure().write_manifest({"hash": "h"})
    data = {}
    for task in cfg.tasks:
        (home / "raw" / task).mkdir(parents=True, exist_ok=True)
        (home / "raw" / task / "f").write_text(task)
        data[task] = K.data_spec(cfg, home, task, {"f": f"raw/{task}/f"}, vocab)
    variant = TrainedVariant.model_construct(name="v", checkpoint="pretrain/ckpt")
    plans = K.sweep_units(cfg, home, [variant], data, vocab, TrackingSpec(uri=None, experiment="e"))
    return [spec for plan in plans for spec, _ in plan.points]


def test_a_point_runs_with_exactly_the_settings_its_key_hashes(tmp_path: Path) -> None:
    """The runner reads its settings from the spec's keyed fields (no unkeyed copy of the
    section): what is left out of the key only names, places or logs the unit."""
    assert set(PointSpec.model_fields) - set(PointSpec.keyed_fields()) == {
        "variant", "data_dir", "tokenizer_dir", "tracking",
    }  # fmt: skip
    base = plan_points(FinetuneConfig(), tmp_path)
    moved = plan_points(FinetuneConfig(device="cpu", concurrency=7, torch_threads=1), tmp_path)
    patient = plan_points(FinetuneConfig(patience=9), tmp_path)
    for a, b, c in zip(base, moved, patient, strict=True):
        assert a.key == b.key and b.shared_settings.device == "cpu"  # read, but not keyed
        assert a.key != c.key
        assert settings_for(c.shared_settings, 8, 1e-3, 0, 16, "score").patience == 9
    # A spec read back from its file holds the task's own settings class, and the same key.
    spec, unit = base[0], base[0].artifact(tmp_path).ensure()
    K.write_spec(unit, spec)
    again = K.read_spec(unit, PointSpec)
    assert type(again.task_settings) is type(spec.task_settings)
    assert again.key == spec.key and again == spec
