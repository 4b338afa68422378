"""One shape for every unit of work: a typed, frozen spec of exactly what the unit reads.

A unit (a file to fetch, a shard to parse, a variant to train, a grid point) is described by a
`UnitSpec` subclass holding the settings and input references it reads, nothing else. Its
content key hashes the spec itself (plus the unit's stage, kind and format version), so a key
cannot drift from what the unit reads: the function that does the work takes the spec, not the
recipe. Fields marked `unkeyed(...)` only say how the unit runs (what it is called in the UI,
what to do with a bad file, memory caps): they never change what it produces, so they stay out
of the key.

Every stage of `mediswift.stages` has the same three parts around its specs:
`units(cfg, inputs) -> list[Spec]`, `run_unit(spec, home) -> Result`, `collect(...) -> Manifest`.
A unit's result is a `UnitResult` model, its manifest's fields: `finish` writes it, last, and
returns it; `done_result` reads it back, the same type, for a unit found done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mediswift.artifacts import Artifact, content_key, unit_at
from mediswift.settings import settings_json

KEYED = "keyed"  # the json_schema_extra flag of fields left out of the key
MANIFEST_ADDS = ("stage", "key")  # what `Artifact.write_manifest` adds to a unit's fields


class UnitResult(BaseModel):
    """What a unit made, as its manifest lists it (the manifest adds its stage and key). Fields
    left None are not written, so optional facts appear only where a unit has them."""

    model_config = ConfigDict(extra="forbid")


R = TypeVar("R", bound=UnitResult)


class FileRef(BaseModel):
    """A file a unit wrote (relative to the home) and the digest that names its content: a
    later unit keys on the digest and reads the path, so the two travel together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    digest: str


def unkeyed(default: Any = None, description: str = "", **kw: Any) -> Any:
    """A spec field that only says how the unit runs: never part of its key."""
    extra = {"description": description, "json_schema_extra": {KEYED: False}, **kw}
    return Field(**extra) if "default_factory" in kw else Field(default, **extra)


class UnitSpec(BaseModel):
    """What one unit reads. Subclasses set `stage`, `kind` and `version` (bump the version when
    the unit's output changes for the same spec: it re-keys every unit of the kind), and
    `Result`, the type of what the unit returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: ClassVar[str]
    kind: ClassVar[str]
    version: ClassVar[int]
    # None: a spec whose runner still returns its manifest as a dict.
    Result: ClassVar[type[UnitResult] | None] = None

    @classmethod
    def keyed_fields(cls) -> list[str]:
        return [
            name
            for name, f in cls.model_fields.items()
            if not (
                isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(KEYED) is False
            )
        ]

    def keyed(self) -> dict[str, Any]:
        """The spec's part that decides the unit's content, as JSON values. A recipe section
        held whole contributes its `result` settings only (how it schedules work never
        re-keys a unit)."""
        return {
            name: settings_json(getattr(self, name), ("result",)) for name in self.keyed_fields()
        }

    @property
    def key(self) -> str:
        return content_key(self.stage, self.kind, self.version, self.keyed())

    def artifact(self, home: Path) -> Artifact:
        """The unit's directory `<home>/<stage>/units/<key>` (done once its manifest exists)."""
        return unit_at(home, self.stage, self.key)

    def done_result(self, home: Path) -> Any:
        """What the unit returned when it finished in an earlier run (its manifest, as the
        spec's `Result`), or None."""
        art = self.artifact(home)
        if not art.done():
            return None
        fields = {k: v for k, v in art.manifest().items() if k not in MANIFEST_ADDS}
        return fields if self.Result is None else self.Result.model_validate(fields)

    def finish(self, home: Path, result: R) -> R:
        """Write `result` as the unit's manifest (last: the unit is done) and return it."""
        self.artifact(home).ensure().write_manifest(
            result.model_dump(mode="json", exclude_none=True)
        )
        return result
