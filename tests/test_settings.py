"""Every setting is classified (result / plan / schedule) and described; rules refuse bad values
when the recipe is loaded."""

from __future__ import annotations

import re

import pytest

from mediswift.config import FinetuneConfig, PipelineConfig, load_recipe
from mediswift.finetune.registry import names, task_class
from mediswift.settings import Section, result, role_of, schedule


def sections() -> list[type[Section]]:
    out = [
        f.annotation
        for f in PipelineConfig.model_fields.values()
        if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
    ]
    return out + [task_class(n).Settings for n in names()]


def test_every_setting_is_classified_and_described() -> None:
    assert len(sections()) >= 9 + 4  # the stage sections, tracking, every built-in task
    for cls in sections():
        assert cls.unclassified() == [], f"{cls.__name__}: unclassified fields"


def test_an_unclassified_field_is_caught() -> None:
    class Sloppy(Section):
        fine: int = result(1, "a classified field")
        later: int = schedule(2, "another")
        forgot: int = 3

    assert Sloppy.unclassified() == ["forgot"]
    assert role_of(Sloppy, "fine") == "result" and role_of(Sloppy, "later") == "schedule"


def test_result_settings_leave_scheduling_out() -> None:
    cfg = FinetuneConfig(concurrency=7, device="cpu", torch_threads=3)
    keyed = cfg.result_settings()
    assert {"concurrency", "device", "torch_threads", "seeds", "tasks"}.isdisjoint(keyed)
    assert keyed["patience"] == 3
    staged = cfg.stage_settings()  # plan fields shape the stage's output: in its key
    assert staged["seeds"] == [0, 1, 2] and set(staged["tasks"]) == {"pubmedqa", "hoc"}
    assert "concurrency" not in staged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pretrain": {"steps": 0}}, "pretrain.steps"),
        ({"pretrain": {"steps": -5}}, "pretrain.steps"),
        ({"pretrain": {"lr": -1}}, "pretrain.lr"),
        ({"pretrain": {"micro_batch": -3}}, "pretrain.micro_batch"),
        ({"pretrain": {"global_batch": 10, "micro_batch": 3}}, "not a multiple of micro_batch"),
        ({"pretrain": {"seq_len": 2048}}, "exceeds the context"),
        ({"pretrain": {"seq_len": 100000}}, "pretrain.seq_len"),
        ({"finetune": {"max_len": 100000}}, "finetune.max_len 100000 exceeds the context"),
        ({"pretrain": {"steps": 10**18}}, "pretrain.steps"),
        ({"pretrain": {"warmup_fraction": 7}}, "pretrain.warmup_fraction"),
        ({"pretrain": {"sparsity_levels": [0.5, 1.0]}}, "not in [0, 1)"),
        ({"pretrain": {"model": "huge"}}, "unknown size 'huge'"),
        ({"pretrain": {"betas": [0.9, 1.5]}}, "pretrain.betas"),
        ({"finetune": {"tasks": {"nope": {}}}}, "unknown downstream task 'nope'"),
        ({"finetune": {"tasks": {"hoc": {"epochs": 0}}}}, "finetune.tasks.hoc"),
        (
            {
                "finetune": {
                    "tasks": {"hoc": {"grid": {"batch_sizes": [0], "learning_rates": [1e-3]}}}
                }
            },
            "batch sizes",
        ),
        ({"finetune": {"seeds": []}}, "finetune.seeds"),
    ],
)
def test_bad_settings_are_refused_at_load(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        load_recipe("demo", override)
    assert "\n" not in str(e.value)  # one line, naming the setting


def test_task_list_selects_and_keeps_the_recipes_sections() -> None:
    cfg = load_recipe("demo", {"finetune": {"tasks": ["hoc"]}})
    assert list(cfg.finetune.tasks) == ["hoc"]
    assert cfg.finetune.tasks["hoc"].epochs == 3  # the demo's, not the paper's 100
    both = load_recipe("demo", {"finetune": {"tasks": ["hoc", "pubmedqa"]}})
    assert both.finetune.tasks["pubmedqa"].grid.learning_rates == [2e-3, 1e-3]


def test_manifest_reference_is_current() -> None:
    from pathlib import Path

    from flows.registry import manifest_reference

    doc = Path(__file__).resolve().parent.parent / "docs" / "manifests.md"
    expected = manifest_reference()
    assert doc.read_text() == expected, "regenerate docs/manifests.md: make docs"


def test_settings_reference_is_current() -> None:
    from pathlib import Path

    from mediswift.config import settings_reference

    doc = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
    assert doc.read_text() == settings_reference(), "regenerate docs/settings.md: make docs"
