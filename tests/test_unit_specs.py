"""What a unit spec may hold outside its key.

A unit's key hashes its keyed fields only, so a runner that read a setting through an unkeyed
field would give different results under one key. Unkeyed fields may say how a unit runs (its
name, where things are and where it logs, caps on bad input), never carry a setting that
changes results: their types are scalars, paths, names of files, the MLflow destination, or a
model whose settings are all declared as not changing results (`mediswift.settings` roles).
The test reads the declared field types and setting roles, not the code that builds specs.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from typing import Any

from pydantic import BaseModel

import mediswift.stages
from mediswift.manifests import TrackingSpec
from mediswift.settings import Section, role_of
from mediswift.units import KEYED, UnitSpec

PLAIN = (str, int, float, bool, type(None))


def every_spec() -> list[type[UnitSpec]]:
    for m in pkgutil.iter_modules(mediswift.stages.__path__):
        importlib.import_module(f"mediswift.stages.{m.name}")
    importlib.import_module("mediswift.finetune.keys")
    importlib.import_module("mediswift.train.variant")
    out, todo = [], list(UnitSpec.__subclasses__())
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(out), key=lambda c: c.__qualname__)


def result_free(model: type[BaseModel]) -> bool:
    """A model none of whose settings is declared to change results."""
    return all(role_of(model, name) != "result" for name in model.model_fields)


def file_names(annotation: Any) -> bool:
    """str -> str, or str -> (str -> str): names of files, nothing else."""
    if annotation is str:
        return True
    key, value = typing.get_args(annotation) or (None, None)
    return typing.get_origin(annotation) is dict and key is str and file_names(value)


def carries_settings(annotation: Any) -> bool:
    """Whether a field of this type could hold a setting that changes results."""
    origin = typing.get_origin(annotation)
    if origin is None:
        if annotation is TrackingSpec:
            return False  # where the unit logs to MLflow
        if isinstance(annotation, type) and issubclass(annotation, Section):
            return not result_free(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel | dict):
            return True
        return annotation is Any or not (
            annotation in PLAIN or getattr(annotation, "__name__", "") in ("Path", "PurePath")
        )
    if origin is dict:  # names of files: role -> path (per task)
        return not file_names(annotation)
    if origin in (list, tuple, typing.Union) or str(origin) == "<class 'types.UnionType'>":
        return any(carries_settings(a) for a in typing.get_args(annotation) if a is not Ellipsis)
    return origin is not typing.Literal  # a Mapping of anything else could hold settings


def unkeyed_fields(spec: type[UnitSpec]) -> dict[str, Any]:
    return {
        name: f.annotation
        for name, f in spec.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(KEYED) is False
    }


def test_every_stage_has_specs():
    names = {c.stage for c in every_spec() if "stage" in vars(c) or hasattr(c, "stage")}
    assert {"download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune"} <= names


def test_unkeyed_fields_carry_no_settings():
    found = [
        f"{spec.__qualname__}.{name}: {annotation}"
        for spec in every_spec()
        for name, annotation in typing.get_type_hints(spec).items()
        if name in unkeyed_fields(spec) and carries_settings(annotation)
    ]
    assert not found, f"unkeyed fields that could carry settings: {found}"


def test_the_check_catches_a_section_held_unkeyed():
    from mediswift.config import FinetuneConfig

    assert carries_settings(FinetuneConfig)
    assert carries_settings(dict[str, Any])
    assert carries_settings(dict[str, dict[str, int]])
    assert not carries_settings(dict[str, dict[str, str]])
    assert carries_settings(Any)
    assert not carries_settings(str | None)
    assert not carries_settings(list[str])
