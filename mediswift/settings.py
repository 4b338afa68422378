"""Settings that own their rules and their keys: the base of every recipe section.

Every field is declared with `result(...)` or `schedule(...)`:
- result: the field can change what a unit of work produces (a checkpoint, a metric), so it is
  part of that unit's content key: changing it re-runs the unit.
- schedule: the field only decides how the work runs (workers, devices, threads, retries), or,
  with `plan=True`, which units a stage has (the sparsity levels, the seeds, the grid). A unit's
  key already names what it is, so changing it never re-runs a finished unit; a `plan` field
  is part of the *stage* key, since the stage's output lists its units.

A result setting added to a section that has finished units is declared `result(default,
..., neutral=True)` when its default reproduces what the units did before it existed: at that
default it stays out of every key, so adding it re-keys nothing (a unit made before the setting
is the unit the default would make); set to anything else, it is keyed like any result setting.
A setting whose default changes results must not be neutral: adding it re-keys its units.

`Section.result_settings()` and `Section.stage_settings()` are the one place content keys take
settings from; a field declared with neither helper is refused by `Section.unclassified()` (a
test runs it over every section). Every field carries a description with its unit: it is the recipe reference, and the
Prefect form shows it.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

AFFECTS = "affects"  # the json_schema_extra key of the classification
NEUTRAL = "neutral"  # ... and of a result setting whose default changes nothing (left unkeyed)
Role = Literal["result", "plan", "schedule"]


def _field(role: Role, default: Any, description: str, neutral: bool = False, **kw: Any) -> Any:
    if not description:
        raise ValueError("every setting needs a description (with its unit)")
    extra: dict[str, Any] = {AFFECTS: role, **({NEUTRAL: True} if neutral else {})}
    if default is ... and "default_factory" in kw:
        return Field(description=description, json_schema_extra=extra, **kw)
    return Field(default, description=description, json_schema_extra=extra, **kw)


def result(default: Any = ..., description: str = "", neutral: bool = False, **kw: Any) -> Any:
    """A setting that changes what a unit produces: it is part of the unit's content key.
    `neutral=True`: its default reproduces what units did before the setting existed, so at
    the default it is left out of keys (adding it to a section re-keys nothing)."""
    if neutral and default is ...:
        raise ValueError("a neutral setting needs the default that changes nothing")
    return _field("result", default, description, neutral, **kw)


def schedule(default: Any = ..., description: str = "", plan: bool = False, **kw: Any) -> Any:
    """A setting that only schedules work: never in a unit's key. `plan=True`: it decides which
    units the stage has, so it is in the stage's key."""
    return _field("plan" if plan else "schedule", default, description, **kw)


def role_of(model: type[BaseModel], name: str) -> Role | None:
    extra = model.model_fields[name].json_schema_extra
    return extra.get(AFFECTS) if isinstance(extra, dict) else None  # type: ignore[return-value]


class Section(BaseModel):
    """A recipe section: unknown keys are typos and refused; every field is classified."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def unclassified(cls) -> list[str]:
        """Fields declared without `result(...)` / `schedule(...)`, or without a description."""
        return [
            name
            for name, f in cls.model_fields.items()
            if role_of(cls, name) not in ("result", "plan", "schedule") or not f.description
        ]

    def _settings(self, roles: tuple[str, ...]) -> dict[str, Any]:
        return {
            name: settings_json(getattr(self, name), roles)
            for name, f in type(self).model_fields.items()
            if role_of(type(self), name) in roles and not self._at_neutral_default(name, f)
        }

    def _at_neutral_default(self, name: str, f: Any) -> bool:
        extra = f.json_schema_extra
        neutral = isinstance(extra, dict) and extra.get(NEUTRAL) is True
        return neutral and getattr(self, name) == f.get_default(call_default_factory=True)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change a unit's result, as JSON values: a unit key hashes them."""
        return self._settings(("result",))

    def stage_settings(self) -> dict[str, Any]:
        """The result and plan settings: what a stage key hashes (never how the work runs)."""
        return self._settings(("result", "plan"))


def settings_json(value: Any, roles: tuple[str, ...]) -> Any:
    """`value` as JSON, keeping of every section in it only the settings of `roles`."""
    if isinstance(value, Section):
        return value._settings(roles)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return settings_json(dataclasses.asdict(value), roles)
    if isinstance(value, tuple | list):
        return [settings_json(v, roles) for v in value]
    if isinstance(value, dict):
        return {k: settings_json(v, roles) for k, v in value.items()}
    return value


def explain(e: ValidationError, model: type[BaseModel] | None = None) -> str:
    """A pydantic error as one line: `section.field: problem; ...`. Given the `model` that was
    validated, an unknown key names the known one it is closest to (a typo's likely fix)."""
    parts = []
    for err in e.errors():
        if model is not None and err["type"] == "extra_forbidden":
            parts.append(unknown_setting(model, err["loc"]))
            continue
        where = ".".join(str(p) for p in err["loc"]) or "recipe"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def unknown_setting(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`unknown setting a.b; did you mean a.c?` for the key at `loc` that `model` lacks."""
    *section, key = (str(p) for p in loc)
    close = difflib.get_close_matches(key, _section_fields(model, loc[:-1]), n=1)
    hint = f"; did you mean {'.'.join([*section, close[0]])}?" if close else ""
    return f"unknown setting {'.'.join([*section, key])}{hint}"


def _section_fields(model: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    """The keys of the section at `path` under `model`; none where that is not a section (a
    mapping's key, a plain value): no guess beats a wrong one."""
    for part in path:
        if isinstance(part, int):  # an item of a list of sections: the same keys
            continue
        field = model.model_fields.get(part)
        inner = _section_type(field.annotation) if field else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section class `annotation` holds: itself, optional, or in a list or mapping."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_section_type, get_args(annotation))), None)
