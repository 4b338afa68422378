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
