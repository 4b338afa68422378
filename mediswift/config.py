"""Typed configuration: one pydantic model per stage, composed into `PipelineConfig`.

Recipes are YAML files in `deployments/recipes/` whose top-level keys are the stage names
below; anything a recipe leaves out takes the defaults here, which follow the paper.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mediswift import sources
from mediswift.finetune.settings import FinetuneConfig
from mediswift.sections import (
    CORPUS_UPSTREAMS,
    DownloadConfig,
    EvaluateConfig,
    ExecutorConfig,
    FilterConfig,
    Grid,
    ParseConfig,
    PretrainConfig,
    TaskSettings,
    TokenizeConfig,
    TrackingConfig,
    VocabConfig,
)
from mediswift.settings import Section, explain, role_of

# Re-exported: the stage sections live in `mediswift.settings` so that lower layers (data,
# training) can import them without importing the downstream-task registry; the finetune
# section lives beside the registry it validates tasks with.
__all__ = [
    "DownloadConfig",
    "EvaluateConfig",
    "FilterConfig",
    "FinetuneConfig",
    "Grid",
    "ParseConfig",
    "PipelineConfig",
    "PretrainConfig",
    "Section",
    "TaskSettings",
    "TokenizeConfig",
    "TrackingConfig",
    "VocabConfig",
    "explain",
    "load_recipe",
]

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent.parent / "deployments" / "recipes"


class PipelineConfig(BaseModel):
    """A whole recipe: one section per stage, each validating its own settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("custom", description="recipe name (shown in runs and reports)")
    mirror: str | None = Field(None, description="local folder or URL standing for upstream")
    download: DownloadConfig = DownloadConfig()
    parse: ParseConfig = ParseConfig()
    filter: FilterConfig = FilterConfig()
    vocab: VocabConfig = VocabConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    executor: ExecutorConfig = ExecutorConfig()

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        # Rules across sections (each section checks its own fields when it is built).
        from mediswift.model.sizes import SIZES  # here: importing the model package loads torch

        for size in self.pretrain.sizes:
            if size not in SIZES:
                raise ValueError(
                    f"pretrain.model: unknown size {size!r}; known: {', '.join(SIZES)}"
                )
        if self.finetune.max_len > self.pretrain.block_size:
            raise ValueError(
                f"finetune.max_len {self.finetune.max_len} exceeds the context of the models it "
                f"fine-tunes (pretrain.block_size {self.pretrain.block_size})"
            )
        return self

    def upstreams(self) -> dict[str, str]:
        """Every upstream base this recipe reads -> the mirror folder standing for it."""
        out = dict(CORPUS_UPSTREAMS)
        for name in self.finetune.tasks:
            out |= self.finetune.task(name).upstreams()
        return out

    def resolve(self, url: str) -> str:
        """Map a real upstream URL onto the mirror when one is set (same relative layout)."""
        if not self.mirror:
            return url
        for base, folder in self.upstreams().items():
            if url.startswith(base):
                return join_url(self.mirror, folder + url[len(base) :])
        return url


def join_url(base: str, rel: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + rel.lstrip("/")
    return str(Path(base) / rel) + ("/" if rel.endswith("/") else "")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_path(recipe: str) -> Path:
    p = Path(recipe)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    p = RECIPES_DIR / f"{recipe}.yaml"
    if not p.exists():
        known = sorted(x.stem for x in RECIPES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"recipe {recipe!r} not found (known: {', '.join(known)})")
    return p


def load_recipe(
    recipe: str,
    overrides: dict[str, Any] | None = None,
    mirror: str | None = None,
    home: Path | None = None,
) -> PipelineConfig:
    """Load a recipe by name or path, apply overrides (nested dict), then the mirror setting.

    The mirror comes, in order of precedence, from `mirror`, `MEDISWIFT_MIRROR` (either may be
    "none": upstream), the source `home` remembers this recipe ran with
    (`mediswift.sources`), the recipe's own `mirror`.
    """
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    except RecursionError:
        # The YAML parser recurses per nesting level: no recipe nests that deep.
        raise ValueError(f"{path}: nested deeper than a recipe can be (a YAML bomb?)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of stage sections")
    try:
        too_big = expanded_size(data, MAX_RECIPE_VALUES) > MAX_RECIPE_VALUES
    except RecursionError:
        raise ValueError(f"{path}: nested deeper than a recipe can be (a YAML bomb?)") from None
    if too_big:
        raise ValueError(
            f"{path}: more than {MAX_RECIPE_VALUES:,} values once its YAML aliases are expanded "
            "(an alias bomb?)"
        )
    data.setdefault("name", path.stem)
    data = deep_merge(data, _select_tasks(data, overrides or {}))
    given = mirror or os.environ.get("MEDISWIFT_MIRROR")
    _check_given_mirror(given, "--mirror" if mirror else "MEDISWIFT_MIRROR")
    mirror = _source(data, given, home)
    if mirror and "://" not in mirror:
        mirror = str(Path(mirror).expanduser().resolve())
    data["mirror"] = mirror
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: {explain(e, PipelineConfig)}") from e


def recipe_settings(recipe: str) -> tuple[Path, dict[str, Any]]:
    """The recipe's file and the settings of its sections as written (no overrides, no
    source): what makes it the recipe its name stands for (`mediswift.recipe_names`)."""
    cfg = load_recipe(recipe, mirror=sources.UPSTREAM)
    sections = {
        name: value.stage_settings()
        for name in type(cfg).model_fields
        if isinstance(value := getattr(cfg, name), Section)
    }
    return recipe_path(recipe), sections


def expanded_size(value: Any, cap: int) -> int:
    """The number of values in `value` with every shared (aliased) part counted each time it
    appears, counting no further than just past `cap`: the size a printer or validator would
    walk. A YAML alias bomb is a few lines whose expansion has billions of values."""
    seen, todo = 0, [value]
    while todo and seen <= cap:
        v = todo.pop()
        seen += 1
        if isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, list | tuple):
            todo.extend(v)
    return seen


def _check_given_mirror(given: str | None, said: str) -> None:
    """Refuse a local mirror the user named that is not a folder: a typo would otherwise fail
    only once the download stage looks for its files, after planning a run against it."""
    if not given or given == sources.UPSTREAM or "://" in given:
        return
    if not Path(given).expanduser().is_dir():
        raise ValueError(f"{said} {given}: no such folder")


def _source(recipe: dict[str, Any], given: str | None, home: Path | None) -> str | None:
    if given:
        return None if given == sources.UPSTREAM else given
    if home is not None:
        known, mirror = sources.remembered(home, recipe["name"])
        if known:
            log.info("recipe %s: source %s, as it last ran in %s (--mirror to change it)",
                     recipe["name"], sources.describe(mirror), home)  # fmt: skip
            return mirror
    return recipe.get("mirror")


def _select_tasks(recipe: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`finetune.tasks` given as a list in an override selects tasks: each keeps the recipe's
    section for it (or its defaults), so `--set finetune.tasks=[hoc]` drops PubMedQA without
    losing HoC's settings."""
    chosen = (overrides.get("finetune") or {}).get("tasks")
    if not isinstance(chosen, list | tuple):
        return overrides
    known = (recipe.get("finetune") or {}).get("tasks") or {}
    if isinstance(known, list | tuple):
        known = {name: {} for name in known}
    picked = {name: known.get(name) or {} for name in chosen}
    out = dict(overrides)
    out["finetune"] = {**overrides["finetune"], "tasks": picked}
    # deep_merge would merge the recipe's other tasks back in: replace the mapping instead.
    recipe.setdefault("finetune", {})["tasks"] = {}
    return out


# Far more values than any recipe has (the paper's has a few hundred), far fewer than a
# printer or validator can walk in a second.
MAX_RECIPE_VALUES = 100_000
# Characters that end or escape the path part of a URL: MLflow's and Prefect's SQLite URLs are
# built from the home's path unquoted, so such a home would put their databases elsewhere.
URL_UNSAFE = "#?%"


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The artifact root: `home`, else MEDISWIFT_HOME, else ./.mediswift (absolute)."""
    path = Path(home or os.environ.get("MEDISWIFT_HOME") or ".mediswift").expanduser().resolve()
    bad = sorted({c for c in str(path) if c in URL_UNSAFE})
    if bad:
        raise ValueError(
            f"home {path}: its path contains {' '.join(repr(c) for c in bad)}, which the SQLite "
            "URLs of MLflow and Prefect cannot hold: choose a home without them"
        )
    return path


def settings_reference() -> str:
    """Every recipe setting (section, role, default, description) as Markdown."""
    from mediswift.finetune.registry import BUILTIN, names, task_class

    sections: list[tuple[str, type[Section]]] = [
        (name, f.annotation)
        for name, f in PipelineConfig.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
    ]
    # Built-in tasks only: the reference documents this package, not whatever else registered.
    builtin = [n for n in names() if task_class(n).__module__ in BUILTIN]
    sections += [(f"finetune.tasks.{n}", task_class(n).Settings) for n in builtin]
    lines = [
        "# Recipe settings",
        "",
        "Generated from `mediswift/settings.py`, `mediswift/config.py` and the task modules.",
        "Role: `result` settings re-key the units they change; `plan` settings decide which",
        "units a stage has; `schedule` settings only decide how the work runs.",
        "",
    ]
    for title, cls in sections:
        lines += [
            f"## `{title}`",
            "",
            "| setting | role | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, f in cls.model_fields.items():
            default = "(required)" if f.is_required() else f.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            cell = repr(default).replace("|", "\\|")
            role = role_of(cls, name)
            lines.append(f"| `{name}` | {role} | `{cell}` | {f.description} |")
        lines.append("")
    return "\n".join(lines)
