"""The pipeline report: pre-training and fine-tuning results, then the data they come from and
links to the runs behind them, in one page.

Built only from the stage manifests, so it can be regenerated at any time; stages that have not
run yet are reported as such. Markdown is the source; HTML is rendered from it for a browser.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import markdown

from mediswift.artifacts import Artifact, write_atomic
from mediswift.config import PipelineConfig
from mediswift.report_links import UiLinks, runs_section
from mediswift.report_sections import (
    CONTAMINATION_FILE,
    claims_section,
    contamination_csv,
    data_section,
    finetune_section,
    pretrain_section,
)

OUTPUTS_FILE = "outputs.json"


def report_dir(home: Path, recipe: str) -> Path:
    """`<home>/report/<recipe>/`: one report per recipe, so recipes sharing a home keep theirs."""
    return home / "report" / recipe


def record_outputs(home: Path, recipe: str, arts: dict[str, Artifact]) -> None:
    """Remember, per stage, the newest complete output this recipe reached (its key)."""
    path = report_dir(home, recipe) / OUTPUTS_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    known |= {stage: art.key for stage, art in arts.items() if art.done()}
    write_atomic(path, json.dumps(known, indent=2, sort_keys=True) + "\n")


def resolve_outputs(home: Path, recipe: str, arts: dict[str, Artifact]) -> dict[str, Artifact]:
    """Each stage's planned output when done, else the newest complete one of this recipe: a
    run of a few stages never turns the report into a partial one."""
    path = report_dir(home, recipe) / OUTPUTS_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    out = {}
    for stage, art in arts.items():
        older = (
            Artifact(stage, known[stage], home / stage / known[stage]) if stage in known else None
        )
        out[stage] = art if art.done() or older is None or not older.done() else older
    return out


def _figure(path: Path) -> str:
    return f"![{path.stem}]({path.name})"


def report_images(home: Path, arts: dict[str, Artifact]) -> dict[str, list[Path]]:
    """The figures of each results section that exist: the loss curves (pre-training), metric
    against FLOPs and against size (fine-tuning)."""
    out: dict[str, list[Path]] = {"pretrain": [], "evaluate": []}
    if arts["pretrain"].done() and arts["pretrain"].manifest().get("loss_plot"):
        out["pretrain"].append(home / arts["pretrain"].manifest()["loss_plot"])
    if arts["evaluate"].done():
        ev = arts["evaluate"].manifest()
        out["evaluate"] += [
            arts["evaluate"].path / ev[k] for k in ("plot", "size_plot") if ev.get(k)
        ]
    return {stage: [p for p in paths if p.exists()] for stage, paths in out.items()}


def _with_figures(text: str, images: list[Path]) -> str:
    return "\n\n".join([text, *(_figure(p) for p in images)])


def build_report(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Artifact],
    planned: dict[str, Artifact] | None = None,
    context: dict[str, str] | None = None,
    links: UiLinks | None = None,
) -> tuple[str, list[Path]]:
    """The report's Markdown and the images it shows (copied next to it).

    Results first (pre-training, then the fine-tuning tables in the paper's order), then the
    data they come from, the runs behind them and the stage outputs. `arts`: the outputs shown;
    `planned`: the recipe's current keys (an output shown that is not the planned one is marked
    as from an earlier run); `context`: date, code version, overrides, listed at the top;
    `links`: where the run links point (the UIs' default local addresses when not given)."""
    planned = planned or arts
    links = links or UiLinks()
    images = report_images(home, arts)
    about = [f"- {k}: {v}" for k, v in (context or {}).items()]
    if links.flow_run():
        about.append(f"- Prefect flow run: [{links.flow_run_name}]({links.flow_run()})")
    about.append("- MLflow runs: linked under Runs, below the data")
    sections = [
        f"# MediSwift report: recipe `{cfg.name}`",
        "\n".join(about),
        "## Pre-training (Tables 2 and 6)\n\n"
        + _with_figures(pretrain_section(arts), images["pretrain"]),
        "## Fine-tuning (Table 3: PubMedQA, Table 4: HoC, then the other downstream tasks)\n\n"
        + _with_figures(finetune_section(arts), images["evaluate"]),
        *(
            [f"## The paper's claims at this scale\n\n{claimed}"]
            if (claimed := claims_section(arts, home)) is not None
            else []
        ),
        "## Pre-training data (Table 1)\n\n" + data_section(arts),
        "## Runs\n\n" + runs_section(arts, links),
    ]

    def state(stage: str) -> str:
        a = arts[stage]
        if not a.done():
            return f"`{planned[stage].key}` not run"
        return f"`{a.key}` done" + ("" if a.key == planned[stage].key else " (an earlier run)")

    sections.append("## Stage outputs\n\n" + "\n".join(f"- {s}: {state(s)}" for s in arts))
    return "\n\n".join(sections) + "\n", images["pretrain"] + images["evaluate"]


def write_report(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Artifact],
    planned: dict[str, Artifact] | None = None,
    context: dict[str, str] | None = None,
    links: UiLinks | None = None,
) -> Path:
    """Write report.md, report.html, its images and the list of contaminated examples (when
    any) under `<home>/report/<recipe>/`; returns the HTML."""
    text, images = build_report(cfg, home, arts, planned, context, links)
    out = report_dir(home, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    for img in images:
        shutil.copyfile(img, out / img.name)
    found = contamination_csv(arts)
    if found is not None:
        write_atomic(out / CONTAMINATION_FILE, found)
    elif (out / CONTAMINATION_FILE).is_file():  # an earlier filter output's list: not this one's
        (out / CONTAMINATION_FILE).unlink()
    write_atomic(out / "report.md", text)
    body = markdown.markdown(text, extensions=["tables"])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(cfg.name)}: MediSwift report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}</style></head><body>" + body + "</body></html>\n"
    )
    write_atomic(out / "report.html", page)
    return out / "report.html"


def code_version(repo: Path) -> str:
    """The git commit of the code (with '+changes' when the tree differs), or 'unknown'."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def inlined_markdown(folder: Path) -> str:
    """The report's Markdown with `![x](file.png)` replaced by data URIs of the files in
    `folder` (relative links cannot render where the report is shown as an artifact)."""

    def embed(m: re.Match[str]) -> str:
        path = folder / m.group(2)
        if not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{m.group(1)}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([^)/:]+\.png)\)", embed, (folder / "report.md").read_text())
