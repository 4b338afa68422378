"""The report's sections of results and data, rendered as Markdown from the stage manifests:
the corpus (Table 1, the rules, decontamination), pre-training (Table 2), each task's tables in
the paper's order, and the claims (`mediswift.report` puts them on one page)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from mediswift.arms import metric_difference
from mediswift.artifacts import Artifact
from mediswift.claims import claims, claims_apply, claims_markdown
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


def results_tables(evaluate: Artifact) -> dict[str, list[dict[str, str]]]:
    """Task -> the rows of its results table (CSV), when the evaluate output is done."""
    if not evaluate.done():
        return {}
    return {
        task: list(csv.DictReader(io.StringIO((evaluate.path / files["csv"]).read_text())))
        for task, files in evaluate.manifest().get("tables", {}).items()
    }
