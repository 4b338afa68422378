"""The registry of downstream tasks: name -> task class.

Built-in tasks register when their module is imported (the list below); tasks of other
packages register through the `mediswift.tasks` entry-point group (a module that calls
`register`), or by calling `register` before the recipe is loaded (as a test module does).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from mediswift.finetune.task import DownstreamTask

BUILTIN = (
    "mediswift.finetune.pubmedqa",
    "mediswift.finetune.hoc",
    "mediswift.finetune.bc5cdr",
    "mediswift.finetune.ddi",
)
ENTRY_POINT_GROUP = "mediswift.tasks"

_TASKS: dict[str, type[DownstreamTask]] = {}
_loaded = False


def register(cls: type[DownstreamTask]) -> type[DownstreamTask]:
    """Class decorator: make the task available to recipes under `cls.name`."""
    known = _TASKS.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"two downstream tasks named {cls.name!r}: {known} and {cls}")
    _TASKS[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def task_class(name: str) -> type[DownstreamTask]:
    _load()
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown downstream task {name!r}; known: {', '.join(sorted(_TASKS))}"
        ) from None


def names() -> list[str]:
    _load()
    return sorted(_TASKS)
