"""The pipeline report: pre-training and fine-tuning results, then the data they come from and
links to the runs behind them, in one page.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markdown

from mediswift.arms import metric_difference
from mediswift.artifacts import Artifact, write_atomic
from mediswift.claims import claims, claims_apply, claims_markdown
from mediswift.config import PipelineConfig
from mediswift.finetune.tables import SELECTION_RULE
from mediswift.finetune.tables import markdown as task_markdown
from mediswift.train.compare import SparsityGap, comparison_markdown
from mediswift.train.report import flops_vs_dense


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


def _bytes(n: Any) -> str:
    """Bytes on disk in decimal units (a variant recorded before checkpoint sizes: -)."""
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


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
    rules = arts["filter"].manifest().get("rules", {})
    by_year = {"revised_after_by_year": counts.get("revised_after_by_year")}
    out += "\n\n" + rules_lines(rules | by_year, dropped)
    if arts["tokenize"].done():
        tokens = arts["tokenize"].manifest().get("tokens", {})
        out += "\n\nTokens: " + ", ".join(f"{k} {_human(v)}" for k, v in sorted(tokens.items()))
    contamination = arts["filter"].manifest().get("contamination")
    if contamination:
        out += "\n\n" + contamination_section(contamination)
    return out


def by_year_text(by_year: dict[str, int]) -> str:
    """The snapshot's PubMed drops by publication year: whether it removes old articles that
    were revised later (the whole list when short, else the oldest and newest years)."""
    if not by_year:
        return ""
    items = [f"{y}: {n}" for y, n in sorted(by_year.items())]
    shown = items if len(items) <= 12 else [*items[:6], "...", *items[-6:]]
    return f"; by publication year {', '.join(shown)}"


def rules_lines(rules: dict[str, Any], dropped: dict[str, int]) -> str:
    """The corpus cut-off and the optional rules, stated under Table 1."""
    year = rules.get("max_year")
    cutoff = (
        f"publication year {year} and earlier (documents published later dropped: "
        f"{dropped.get('after_cutoff', 0)}; documents without a year kept)"
        if year is not None
        else "none (every publication year kept)"
    )
    if (snapshot := rules.get("max_revised")) is not None:
        cutoff += (
            f"; snapshot: PubMed as last revised before {snapshot} (copies revised later dropped "
            f"or replaced by an earlier copy: {dropped.get('revised_after', 0)}"
            + by_year_text(rules.get("revised_after_by_year") or {})
            + f"); PMC articles published on or after it dropped: "
            f"{dropped.get('published_after', 0)}"
        )
    overlap = (
        f"dropped when the article's full text is in the PMC set ({dropped.get('pmc_overlap', 0)})"
        if rules.get("pmc_overlap") and rules.get("pmc_overlap_rule") != "any_pmcid"
        else f"dropped when the record names a PMC article ({dropped.get('pmc_overlap', 0)})"
        if rules.get("pmc_overlap")
        else "kept even when the article's full text is in the PMC set"
    )
    return (
        f"- Corpus cut-off: {cutoff}\n- PubMed abstracts: {overlap}\n"
        f"- Decontamination: {decontamination_line(rules, dropped)}"
    )


def decontamination_line(rules: dict[str, Any], dropped: dict[str, int]) -> str:
    """The decontamination rule as configured, with what it dropped (the other counts are in
    `contamination_section`)."""
    if not rules.get("decontaminate"):
        return "off"
    n = rules.get("contamination_ngram")
    what = (
        f"the shared {n}-word n-gram and 200 characters either side of it removed (documents "
        f"split into more than 10 pieces or left with no piece of 200 characters dropped: "
        f"{dropped.get('contamination', 0)})"
        if rules.get("decontaminate_mode") == "window"
        else f"documents sharing a {n}-word n-gram with a dev or test example dropped "
        f"({dropped.get('contamination', 0)})"
    )
    guard = rules.get("contamination_max_docs")
    guard_text = (
        f"n-grams in more than {guard} corpus documents ignored as boilerplate"
        if guard is not None
        else "no boilerplate guard"
    )
    return f"{what}; {guard_text}; this project's addition, not the paper's"


# Every evaluation example found in the pre-training corpus, one row each, next to the report:
# there can be thousands, so the report itself gives their count and links here.
CONTAMINATION_FILE = "contamination.csv"
CONTAMINATION_COLUMNS = ["task", "split", "example", "documents", "corpus doc_ids (first 5)"]


def contamination_section(c: dict[str, Any]) -> str:
    """Which evaluation examples the pre-training corpus held (and lost to the filter): counts per
    task and split; the examples themselves are in `CONTAMINATION_FILE`."""
    found = c.get("found", [])
    per: dict[tuple[str, str], int] = {}
    for f in found:
        per[(f["task"], f["split"])] = per.get((f["task"], f["split"]), 0) + 1
    checked, short = c.get("checked", {}), c.get("too_short", {})
    summary = [
        [
            task,
            split,
            n,
            checked.get(task, {}).get(split, "-"),
            short.get(task, {}).get(split, "-"),
            per.get((task, split), 0),
        ]
        for task, splits in sorted(c.get("examples", {}).items())
        for split, n in sorted(splits.items())
    ]
    n = c.get("ngram")
    out = (
        f"**Decontamination** ({n}-word n-grams of GPT-3's words: lower-cased, punctuation "
        f"deleted, split on white space; {c.get('mode', 'document')} mode): {_by_rule(c)}; "
        f"{len(found)} evaluation examples were in the corpus. An example under {n} words "
        "holds no n-gram: it is too short to check.\n\n"
        + _table(["Task", "Split", "Examples", "Checked", "Too short to check", "Found"], summary)
    )
    if found:
        out += (
            f"\n\nThe {len(found)} examples found, with the corpus documents holding each: "
            f"[{CONTAMINATION_FILE}]({CONTAMINATION_FILE}) (also in the filter stage's manifest)."
        )
    return out


def _by_rule(c: dict[str, Any]) -> str:
    """What each decontamination rule did to the pre-training documents."""
    if "dropped" not in c:  # a manifest from before the guard: every document found was dropped
        return f"{c.get('documents', 0)} pre-training documents dropped"
    parts = [f"{c['dropped']} pre-training documents dropped"]
    if c.get("mode") == "window":
        parts.append(
            f"{c.get('cut', 0)} cut (their n-grams' windows removed, "
            f"{c.get('chars_removed', 0):,} characters in all)"
        )
    if c.get("max_docs") is not None:
        parts.append(
            f"{c.get('spared', 0)} kept whole for sharing only boilerplate (the "
            f"{c.get('boilerplate_ngrams', 0)} evaluation n-grams found in more than "
            f"{c['max_docs']} corpus documents, ignored)"
        )
    return "; ".join(parts)


def contamination_csv(arts: dict[str, Artifact]) -> str | None:
    """`CONTAMINATION_FILE`'s text: every example found, or None when there is none."""
    if not arts["filter"].done():
        return None
    found = (arts["filter"].manifest().get("contamination") or {}).get("found", [])
    if not found:
        return None
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CONTAMINATION_COLUMNS)
    out.writerows(
        [f["task"], f["split"], f["id"], f["documents"], " ".join(f["doc_ids"])] for f in found
    )
    return buf.getvalue()


def pretrain_section(arts: dict[str, Artifact]) -> str:
    if not arts["pretrain"].done():
        return "_Pre-training has not run yet._"
    variants = arts["pretrain"].manifest().get("variants", [])
    ratios = flops_vs_dense(variants)
    rows = [
        [
            v.get("name"),
            _human(v.get("active_params")),
            _human(v.get("active_non_embedding_params")),
            # A variant without a loss (a failed or diverged run) reads as such, never as a crash.
            _fmt(v.get("final_train_loss")) if v.get("final_train_loss") is not None else "missing",
            _fmt(v.get("final_val_loss")) if v.get("final_val_loss") is not None else "missing",
            _fmt(v.get("val_ppl"), ".1f"),
            f"{_fmt(v.get('train_flops'), '.3e')} ({_fmt(ratios.get(v.get('name')), '.2f')}x)",
            f"{_bytes(v.get('checkpoint_bytes'))} / {_bytes(v.get('resume_checkpoint_bytes'))}",
        ]
        for v in variants
    ]
    header = ["Variant", "Size", "Non-emb. active", "Train loss", "Val loss", "Val ppl", "FLOPs",
              "Checkpoint (final / resumable)"]  # fmt: skip
    m = arts["pretrain"].manifest()
    gaps = [SparsityGap(**g) for g in m.get("sparsity_gaps", [])]
    comparison = comparison_markdown(m.get("unigram_val_loss"), gaps)
    return _table(header, rows) + ("\n\n" + comparison if comparison else "")


def paper_order(title: str, task: str) -> tuple[float, str]:
    """Tables in the paper's order (PubMedQA is its Table 3, HoC its Table 4), then the tasks the
    paper has no table for (BC5CDR, DDI, plug-ins), by name."""
    m = re.search(r"\bTable (\d+)", title)
    return (int(m.group(1)) if m else float("inf"), task)


def task_tables(evaluate: Artifact) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(task, title, rows) of each results table, in the paper's order. The rows come from the
    CSV (the same cells as the Markdown); the title is the Markdown's bold first line."""
    out = []
    for task, rows in results_tables(evaluate).items():
        files = evaluate.manifest()["tables"][task]
        md = evaluate.path / files.get("md", "")
        first = md.read_text().split("\n", 1)[0] if md.is_file() else ""
        out.append((task, first.strip("* ") or task, rows))
    return sorted(out, key=lambda t: paper_order(t[1], t[0]))


def finetune_section(arts: dict[str, Artifact]) -> str:
    if not arts["evaluate"].done():
        return "_Fine-tuning and evaluation have not run yet._"
    parts = [
        f"### {task}\n\n" + task_markdown(rows, title).strip()
        for task, title, rows in task_tables(arts["evaluate"])
    ]
    if not parts:
        return "_No tables were written._"
    return "\n\n".join(parts) + "\n\n" + SELECTION_RULE.strip()


def claims_section(arts: dict[str, Artifact], home: Path) -> str | None:
    """The paper's claims this recipe can test, with what was measured and a verdict each
    (`mediswift.claims`); None unless two or more model sizes were pre-trained."""
    if not arts["pretrain"].done():
        return None
    variants = arts["pretrain"].manifest().get("variants", [])
    if not claims_apply(variants):
        return None
    ev = arts["evaluate"].manifest() if arts["evaluate"].done() else {}
    fin = arts.get("finetune")
    ft = fin.manifest() if fin is not None and fin.done() else None
    mode = ev.get("plot_mode")
    rows = claims(variants, ev.get("results"), mode, metric_difference(home, ft))
    text = claims_markdown(rows, variants, mode)
    if not ev:
        text += "\n\n_Fine-tuning and evaluation have not run yet: claim 2 is not tested._"
    return text


MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow server` / `mlflow ui` listen by default
PREFECT_UI = "http://127.0.0.1:4200"  # where `prefect server start` listens by default
# The MLflow UI as `make serve` runs it: one worker, no job runner (nothing here submits jobs).
MLFLOW_SERVER = (
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --host 127.0.0.1 --port 5000 "
    "--workers 1 --backend-store-uri"
)
PREFECT_SERVER = "prefect server start --host 127.0.0.1 --port 4200"


@dataclass(frozen=True)
class UiLinks:
    """Where the report's run links point, and the command that starts each UI (None: a server
    that is already up). The flow run is the Prefect run that wrote the report."""

    mlflow_ui: str = MLFLOW_UI
    mlflow_command: str | None = None
    prefect_ui: str = PREFECT_UI
    prefect_command: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    def mlflow_run(self, run_id: str) -> str:
        # The UI's direct run route finds the run's experiment itself: the manifests keep run
        # ids, not experiment ids.
        return f"{self.mlflow_ui.rstrip('/')}/#/runs/{run_id}"

    def flow_run(self) -> str | None:
        if not self.flow_run_id:
            return None
        return f"{self.prefect_ui.rstrip('/')}/runs/flow-run/{self.flow_run_id}"


def ui_links(
    cfg: PipelineConfig,
    home: Path,
    flow_run_id: str | None = None,
    flow_run_name: str | None = None,
    prefect_ui: str | None = None,
    prefect_home: str | None = None,
) -> UiLinks:
    """The links of a report written by flow run `flow_run_id`. MLflow: the UI `make serve` set,
    else the tracking server itself, else a local `mlflow server` on the recipe's store.
    Prefect: `prefect_ui` when a server is known, else `prefect server start` on
    `prefect_home`, where a temporary server keeps its runs."""
    from mediswift.tracking import mlflow_ui_base, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    server = uri if uri.startswith(("http://", "https://")) else None
    mlflow_ui = mlflow_ui_base() or server
    # The report is a file of the home, which can move: paths in the home are written as
    # `<home>/...` (the report says what <home> is), never as this machine's absolute path.
    uri = in_home(uri, home)
    env = f"PREFECT_HOME={in_home(prefect_home, home)} " if prefect_home else ""
    return UiLinks(
        mlflow_ui=mlflow_ui or MLFLOW_UI,
        mlflow_command=None if mlflow_ui else f"{MLFLOW_SERVER} {uri}",
        prefect_ui=prefect_ui or PREFECT_UI,
        prefect_command=None if prefect_ui else f"{env}{PREFECT_SERVER}",
        flow_run_id=flow_run_id,
        flow_run_name=flow_run_name,
    )


HOME_MARK = "<home>"


def in_home(text: str, home: Path) -> str:
    """`text` with the home's absolute path written as `<home>`."""
    return text.replace(str(Path(home).resolve()), HOME_MARK).replace(str(home), HOME_MARK)


def _opened_by(what: str, base: str, command: str | None) -> str:
    return f"{what} at {base}" + (f" (start it with `{command}`)" if command else "")


def sweep_links(ev: dict[str, Any], variant: str, tasks: list[str], links: UiLinks) -> str:
    """`task: [sweep](..), [chosen point](..)` for each task of `variant` that has runs."""
    by_task = {r["task"]: r for r in ev.get("results", []) if r["variant"] == variant}
    cells = []
    for task in [t for t in tasks if t in by_task]:
        r = by_task[task]
        chosen = (r.get("selected_point") or {}).get("mlflow_run_id")
        runs = [("sweep", r.get("parent_run_id")), ("chosen point", chosen)]
        found = [f"[{label}]({links.mlflow_run(rid)})" for label, rid in runs if rid]
        if found:
            cells.append(f"{task}: " + ", ".join(found))
    return "; ".join(cells) or "-"


def runs_section(arts: dict[str, Artifact], links: UiLinks) -> str:
    """Links to the Prefect flow run and every MLflow run behind the results: a variant's
    pre-training, each fine-tuning sweep (its grid points are its child runs) with its chosen
    point, and the evaluation."""
    # As code: bare, Markdown passes `<home>` to the HTML as a tag and the page drops the word.
    how = (
        f"`{HOME_MARK}` is the artifact root holding this report (its `report/` folder). "
        "Run links open "
        + _opened_by("the MLflow UI", links.mlflow_ui, links.mlflow_command)
        + "; the flow-run link opens "
        + _opened_by("the Prefect UI", links.prefect_ui, links.prefect_command)
        + "."
    )
    items = []
    if links.flow_run():
        items.append(f"- Prefect flow run: [{links.flow_run_name}]({links.flow_run()})")
    ev = arts["evaluate"].manifest() if arts["evaluate"].done() else {}
    if ev.get("mlflow_run_id"):
        items.append(
            f"- Evaluation (tables, figures): [run]({links.mlflow_run(ev['mlflow_run_id'])})"
        )
    variants = arts["pretrain"].manifest().get("variants", []) if arts["pretrain"].done() else []
    pretrained = {v["name"]: v.get("mlflow_run_id") for v in variants}
    names = list(dict.fromkeys([*pretrained, *(r["variant"] for r in ev.get("results", []))]))
    tasks = [t for t, _, _ in task_tables(arts["evaluate"])] if ev else []
    rows = [
        [
            name,
            f"[run]({links.mlflow_run(pretrained[name])})" if pretrained.get(name) else "-",
            sweep_links(ev, name, tasks, links),
        ]
        for name in names
    ]
    table = [_table(["Variant", "Pre-training", "Fine-tuning per task"], rows)] if rows else []
    return "\n\n".join([how, *(["\n".join(items)] if items else []), *table])


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


def results_tables(evaluate: Artifact) -> dict[str, list[dict[str, str]]]:
    """Task -> the rows of its results table (CSV), when the evaluate output is done."""
    if not evaluate.done():
        return {}
    return {
        task: list(csv.DictReader(io.StringIO((evaluate.path / files["csv"]).read_text())))
        for task, files in evaluate.manifest().get("tables", {}).items()
    }
