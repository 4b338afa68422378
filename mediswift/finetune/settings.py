"""The finetune section of a recipe: settings shared by every downstream task, and one section
per task, validated by the task's own settings class (from the registry)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SerializeAsAny, ValidationError, field_validator

from mediswift.finetune.registry import task_class
from mediswift.sections import DEVICE_PATTERN, TaskSettings, optimization
from mediswift.settings import explain, result, schedule

_FinetuneOptim = optimization(
    "FinetuneOptimization", weight_decay=0.01, betas=(0.9, 0.999), min_lr_ratio=0.0
)


class FinetuneShared(_FinetuneOptim):  # type: ignore[misc,valid-type]
    """The finetune settings every downstream task shares, without the tasks' own sections.

    What a unit of any task reads from the section besides its task's settings: its spec holds
    them, and its key takes their result settings (`mediswift.units.UnitSpec.keyed`)."""

    patience: int = result(3, "epochs without a better dev metric before stopping", ge=1)
    loss_on: Literal["target", "sequence"] = result(
        "target", "tokens in the loss: the target only, or source and target (BioGPT)"
    )
    max_len: int = result(1024, "context tokens of a fine-tuning sequence", ge=8)
    early_stop_on: Literal["score", "generate"] = result(
        "score", "prediction mode whose dev metric drives early stopping"
    )
    eval_batch_size: int = result(16, "sequences per evaluation batch", ge=1)
    concurrency: int = schedule(2, "grid points trained at once (threads)", ge=1)
    device: str = schedule("auto", "auto, cpu, cuda or cuda:N", pattern=DEVICE_PATTERN)
    torch_threads: int | None = schedule(
        None, "torch threads per grid point (None: cores / concurrency)", ge=1
    )


class FinetuneConfig(FinetuneShared):
    """Settings shared by every downstream task, and one section per task (`tasks`).

    A task's own settings (its grid, epochs, prompt length, data caps, sources) live in its
    section and re-key only that task; the settings here re-key every task.
    """

    tasks: dict[str, SerializeAsAny[TaskSettings]] = schedule(
        default_factory=lambda: {"pubmedqa": {}, "hoc": {}},
        description="downstream task -> its own settings (a list of names: defaults)",
        plan=True,
        validate_default=True,
    )
    seeds: list[int] = schedule(
        default_factory=lambda: [0, 1, 2],
        description="seeds of every grid point",
        plan=True,
        min_length=1,
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_sections(cls, value: Any) -> Any:
        # Each task validates its own section with its own settings class (see the registry).
        if isinstance(value, list | tuple):
            value = {name: {} for name in value}
        if not isinstance(value, dict) or not value:
            raise ValueError("finetune.tasks: a mapping of task name -> settings (or a list)")
        out = {}
        for name, section in value.items():
            settings_cls = task_class(name).Settings
            if isinstance(section, settings_cls):
                out[name] = section
                continue
            try:
                out[name] = settings_cls.model_validate(section or {})
            except ValidationError as e:
                raise ValueError(f"finetune.tasks.{name}.{explain(e)}") from e
        return out

    def task(self, name: str) -> Any:
        """The task plug-in `name` bound to its settings from this section."""
        return task_class(name)(self.tasks[name])

    def shared(self) -> FinetuneShared:
        """The shared settings alone (validated with the section: not validated again)."""
        return FinetuneShared.model_construct(
            **{name: getattr(self, name) for name in FinetuneShared.model_fields}
        )


def task_settings_of(task: str, value: Any) -> TaskSettings:
    """`value` (a mapping, or settings already) as the settings of task `task`: a spec read
    back from its file holds a task's section as a mapping, which its own class validates."""
    settings_cls = task_class(task).Settings
    return value if isinstance(value, settings_cls) else settings_cls.model_validate(value)
