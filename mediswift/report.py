"""The pipeline report: data counts, pre-training variants and fine-tuning results in one page.

Built only from the stage manifests, so it can be regenerated at any time; stages that have not
run yet are reported as such. Markdown is the source; HTML is rendered from it for a browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import markdown

from mediswift.artifacts import Artifact, write_atomic
from mediswift.config import PipelineConfig
from mediswift.train.compare import SparsityGap, comparison_markdown


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _human(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def data_section(arts: dict[str, Artifact]) -> str:
    if not arts["filter"].done():
        return "_The data stages have not run yet._"
    counts = arts["filter"].manifest().get("counts", {})
    rows = []
    for source, split in sorted(counts.get("by_source", {}).items()):
        train, val = split.get("train", 0), split.get("validation", 0)
        pct = f"{100 * val / train:.1f}%" if train else "-"
        rows.append([source, train, f"{val} ({pct})"])
    kept = counts.get("kept", {})
    rows.append(["**Total**", kept.get("train", "-"), kept.get("validation", "-")])
    out = _table(["Dataset", "Train", "Validation"], rows)
    dropped = counts.get("dropped", {})
    if dropped:
        out += "\n\nDropped: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
    out += "\n\n" + rules_lines(arts["filter"].manifest().get("rules", {}), dropped)
    if arts["tokenize"].done():
        tokens = arts["tokenize"].manifest().get("tokens", {})
        out += "\n\nTokens: " + ", ".join(f"{k} {_human(v)}" for k, v in sorted(tokens.items()))
    contamination = arts["filter"].manifest().get("contamination")
    if contamination:
        out += "\n\n" + contamination_section(contamination)
    return out


def rules_lines(rules: dict[str, Any], dropped: dict[str, int]) -> str:
    """The corpus cut-off and the optional rules, stated under Table 1."""
    year = rules.get("max_year")
    cutoff = (
        f"publication year {year} and earlier (documents published later dropped: "
        f"{dropped.get('after_cutoff', 0)}; documents without a year kept)"
        if year is not None
        else "none (every publication year kept)"
    )
    overlap = (
        f"dropped when the article's full text is in the PMC set ({dropped.get('pmc_overlap', 0)})"
        if rules.get("pmc_overlap")
        else "kept even when the article's full text is in the PMC set"
    )
    n = rules.get("contamination_ngram")
    decon = (
        f"documents sharing a {n}-word n-gram with a dev or test example dropped "
        f"({dropped.get('contamination', 0)})"
        if rules.get("decontaminate")
        else "off"
    )
    return f"- Corpus cut-off: {cutoff}\n- PubMed abstracts: {overlap}\n- Decontamination: {decon}"


# The report lists at most this many found examples (the filter manifest has them all).
REPORT_FOUND_ROWS = 50


def contamination_section(c: dict[str, Any]) -> str:
    """Which evaluation examples the pre-training corpus held (and lost to the filter)."""
    found = c.get("found", [])
    per: dict[tuple[str, str], int] = {}
    for f in found:
        per[(f["task"], f["split"])] = per.get((f["task"], f["split"]), 0) + 1
    summary = [
        [
            task,
            split,
            n,
            c.get("checked", {}).get(task, {}).get(split, "-"),
            per.get((task, split), 0),
        ]
        for task, splits in sorted(c.get("examples", {}).items())
        for split, n in sorted(splits.items())
    ]
    out = (
        f"**Decontamination** ({c.get('ngram')}-word n-grams after lower-casing and removing "
        f"punctuation): {c.get('documents', 0)} pre-training documents dropped; "
        f"{len(found)} evaluation examples were in the corpus.\n\n"
        + _table(["Task", "Split", "Examples", "Checked (long enough)", "Found"], summary)
    )
    if found:
        rows = [
            [f["task"], f["split"], f["id"], f["documents"], ", ".join(f["doc_ids"])]
            for f in found[:REPORT_FOUND_ROWS]
        ]
        header = ["Task", "Split", "Example", "Documents", "Corpus doc_id (first 5)"]
        more = len(found) - len(rows)
        tail = f"\n\n... and {more} more (all in the filter manifest)" if more > 0 else ""
        out += "\n\nEvaluation examples found in the corpus:\n\n" + _table(header, rows) + tail
    return out


def pretrain_section(arts: dict[str, Artifact]) -> str:
    if not arts["pretrain"].done():
        return "_Pre-training has not run yet._"
    variants = arts["pretrain"].manifest().get("variants", [])
    rows = [
        [
            v.get("name"),
            _human(v.get("active_params")),
            _human(v.get("active_non_embedding_params")),
            _fmt(v.get("final_train_loss")),
            _fmt(v.get("final_val_loss")),
            _fmt(v.get("val_ppl"), ".1f"),
            f"{_fmt(v.get('train_flops'), '.3e')} ({_fmt(v.get('flops_ratio'), '.2f')}x)",
        ]
        for v in variants
    ]
    header = ["Variant", "Size", "Non-emb. active", "Train loss", "Val loss", "Val ppl", "FLOPs"]
    m = arts["pretrain"].manifest()
    gaps = [SparsityGap(**g) for g in m.get("sparsity_gaps", [])]
    comparison = comparison_markdown(m.get("unigram_val_loss"), gaps)
    return _table(header, rows) + ("\n\n" + comparison if comparison else "")


def finetune_section(arts: dict[str, Artifact]) -> str:
    if not arts["evaluate"].done():
        return "_Fine-tuning and evaluation have not run yet._"
    ev = arts["evaluate"]
    parts = []
    for task, files in sorted(ev.manifest().get("tables", {}).items()):
        md = files.get("md") if isinstance(files, dict) else None
        if md and (ev.path / md).is_file():
            parts.append(f"### {task}\n\n" + (ev.path / md).read_text().strip())
    return "\n\n".join(parts) or "_No tables were written._"


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


def build_report(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Artifact],
    planned: dict[str, Artifact] | None = None,
    context: dict[str, str] | None = None,
) -> tuple[str, list[Path]]:
    """The report's Markdown and the images it shows (copied next to it).

    `arts`: the outputs shown; `planned`: the recipe's current keys (an output shown that is
    not the planned one is marked as from an earlier run); `context`: date, code version,
    overrides and links, listed at the top."""
    planned = planned or arts
    images: list[Path] = []
    if arts["pretrain"].done() and arts["pretrain"].manifest().get("loss_plot"):
        images.append(home / arts["pretrain"].manifest()["loss_plot"])
    if arts["evaluate"].done():
        ev = arts["evaluate"].manifest()
        images += [arts["evaluate"].path / ev[k] for k in ("plot", "size_plot") if ev.get(k)]
    about = "\n".join(f"- {k}: {v}" for k, v in (context or {}).items())
    sections = [
        f"# MediSwift report: recipe `{cfg.name}`",
        *([about] if about else []),
        "## Pre-training data (Table 1)\n\n" + data_section(arts),
        "## Pre-training (Tables 2 and 6)\n\n" + pretrain_section(arts),
        "## Fine-tuning (Tables 3 and 4, and every other downstream task)\n\n"
        + finetune_section(arts),
    ]
    figures = "\n\n".join(f"![{p.stem}]({p.name})" for p in images if p.exists())
    if figures:
        sections.append("## Figures\n\n" + figures)

    def state(stage: str) -> str:
        a = arts[stage]
        if not a.done():
            return f"`{planned[stage].key}` not run"
        return f"`{a.key}` done" + ("" if a.key == planned[stage].key else " (an earlier run)")

    sections.append("## Stage outputs\n\n" + "\n".join(f"- {s}: {state(s)}" for s in arts))
    return "\n\n".join(sections) + "\n", [p for p in images if p.exists()]


def write_report(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Artifact],
    planned: dict[str, Artifact] | None = None,
    context: dict[str, str] | None = None,
) -> Path:
    """Write report.md, report.html and its images under `<home>/report/<recipe>/`; returns the
    HTML."""
    text, images = build_report(cfg, home, arts, planned, context)
    out = report_dir(home, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    for img in images:
        shutil.copyfile(img, out / img.name)
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


def results_tables(evaluate: Artifact) -> dict[str, list[dict[str, str]]]:
    """Task -> the rows of its results table (CSV), when the evaluate output is done."""
    if not evaluate.done():
        return {}
    return {
        task: list(csv.DictReader(io.StringIO((evaluate.path / files["csv"]).read_text())))
        for task, files in evaluate.manifest().get("tables", {}).items()
    }
