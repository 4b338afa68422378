"""What re-keys a fine-tuning grid point: only the settings that can change its result."""

from __future__ import annotations

from flows.stages.finetune import point_settings
from mediswift.config import FinetuneConfig


def test_task_settings_only_touch_their_task() -> None:
    base = FinetuneConfig()
    hoc_longer = base.model_copy(update={"hoc_epochs": 7})
    assert point_settings(base, "pubmedqa") == point_settings(hoc_longer, "pubmedqa")
    assert point_settings(base, "hoc") != point_settings(hoc_longer, "hoc")
    pqa_prompt = base.model_copy(update={"pubmedqa_prompt_tokens": 3})
    assert point_settings(base, "hoc") == point_settings(pqa_prompt, "hoc")
    assert point_settings(base, "pubmedqa") != point_settings(pqa_prompt, "pubmedqa")


def test_shared_settings_touch_both_and_scheduling_none() -> None:
    base = FinetuneConfig()
    patient = base.model_copy(update={"patience": 9})
    busy = base.model_copy(update={"concurrency": 8, "seeds": [5]})
    for task in ("pubmedqa", "hoc"):
        assert point_settings(base, task) != point_settings(patient, task)
        assert point_settings(base, task) == point_settings(busy, task)
