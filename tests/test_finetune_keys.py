"""What re-keys a fine-tuning unit: only the settings that can change its result."""

from __future__ import annotations

from mediswift.config import FinetuneConfig
from mediswift.finetune.keys import result_settings


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
    from mediswift.finetune.point import settings_for
    from mediswift.finetune.settings import FinetuneConfig

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
