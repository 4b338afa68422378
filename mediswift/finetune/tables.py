"""Tables 3 (PubMedQA accuracy) and 4 (HoC micro-F1) for our variants, and the plot of the
metric against pre-training FLOPs.

Each row: model, sparsity, active size (non-embedding parameters that are active during
pre-training, the paper's "size" column), pre-training FLOPs, then per prediction mode the test
metric's mean +/- standard deviation over seeds at the (batch, lr) chosen on dev, and that
choice. A majority-class row gives the floor every number must be read against.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mediswift.artifacts import write_atomic
from mediswift.finetune.grid import select

TASK_TITLES = {
    "pubmedqa": ("Table 3", "PubMedQA reasoning-required, PQA-L test accuracy (%)"),
    "hoc": ("Table 4", "HoC (BLURB split) test micro-F1 (%)"),
}
MODE_NAMES = {"score": "constrained scoring", "generate": "greedy generation"}


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def summarize(
    finetune: dict[str, Any], pretrain: dict[str, Any], modes: Sequence[str]
) -> list[dict[str, Any]]:
    """One result per (variant, task): pre-training facts and the per-mode selection."""
    variants = {v["name"]: v for v in pretrain["variants"]}
    out = []
    for sweep in finetune["sweeps"]:
        v = variants.get(sweep["variant"])
        if v is None:
            raise ValueError(f"finetune sweep for unknown variant {sweep['variant']!r}")
        task = finetune["tasks"][sweep["task"]]
        out.append(
            {
                "variant": v["name"],
                "model": v["model"],
                "sparsity": v["sparsity"],
                "active_non_embedding_params": v["active_non_embedding_params"],
                "active_params": v["active_params"],
                "train_flops": v["train_flops"],
                "task": sweep["task"],
                "metric": sweep["metric"],
                "majority_test": task["majority"]["test"],
                "majority_label": task["majority"]["label"],
                "parent_run_id": sweep.get("parent_run_id"),
                "selection": {m: select(sweep["points"], m) for m in modes},
            }
        )
    return out


def _pct(x: float, digits: int) -> str:
    return f"{100 * x:.{digits}f}"


def table_rows(
    results: Sequence[dict[str, Any]], task: str, modes: Sequence[str]
) -> list[dict[str, str]]:
    digits = 1 if task == "pubmedqa" else 2
    rows = []
    task_results = [r for r in results if r["task"] == task]
    for r in sorted(task_results, key=lambda r: (r["model"], r["sparsity"])):
        row = {
            "model": r["variant"],
            "sparsity": f"{r['sparsity']:.0%}",
            "active size": human(r["active_non_embedding_params"]),
            "pre-training FLOPs": f"{r['train_flops']:.3g}",
        }
        for m in modes:
            s = r["selection"][m]
            row[f"{MODE_NAMES[m]}"] = (
                f"{_pct(s['test_mean'], digits)} ± {_pct(s['test_std'], digits)}"
            )
            row[f"{MODE_NAMES[m]}: batch, lr (n seeds)"] = (
                f"{s['batch_size']}, {s['lr']:g} ({len(s['seeds'])})"
            )
        rows.append(row)
    if task_results:
        base = task_results[0]
        row = {
            "model": "majority class",
            "sparsity": "-",
            "active size": "-",
            "pre-training FLOPs": "-",
        }
        for m in modes:
            row[MODE_NAMES[m]] = _pct(base["majority_test"], digits)
            row[f"{MODE_NAMES[m]}: batch, lr (n seeds)"] = "-"
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, str]], title: str) -> str:
    if not rows:
        return f"**{title}**\n\n(no results)\n"
    cols = list(rows[0])
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def write_tables(
    results: Sequence[dict[str, Any]], modes: Sequence[str], out_dir: Path
) -> dict[str, dict[str, str]]:
    """table3_pubmedqa.{md,csv}, table4_hoc.{md,csv}; returns {task: {md, csv, text}}."""
    written = {}
    for task, (label, what) in TASK_TITLES.items():
        if not any(r["task"] == task for r in results):
            continue
        rows = table_rows(results, task, modes)
        stem = f"{label.lower().replace(' ', '')}_{task}"
        text = markdown(rows, f"{label}: {what}, mean ± std over seeds")
        write_atomic(out_dir / f"{stem}.md", text)
        write_atomic(out_dir / f"{stem}.csv", csv_text(rows))
        written[task] = {"md": f"{stem}.md", "csv": f"{stem}.csv", "text": text}
    return written


def plot(results: Sequence[dict[str, Any]], mode: str, path: Path) -> Path:
    """Test metric (mean ± std over seeds) against pre-training FLOPs, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASK_TITLES if any(r["task"] == t for r in results)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, task in zip(axes, tasks, strict=False):
        rs = [r for r in results if r["task"] == task]
        for model in sorted({r["model"] for r in rs}):
            pts = sorted((r for r in rs if r["model"] == model), key=lambda r: r["train_flops"])
            ax.errorbar(
                [r["train_flops"] for r in pts],
                [100 * r["selection"][mode]["test_mean"] for r in pts],
                yerr=[100 * r["selection"][mode]["test_std"] for r in pts],
                marker="o",
                capsize=3,
                label=model,
            )
            for r in pts:
                ax.annotate(
                    f"s={r['sparsity']:.0%}",
                    (r["train_flops"], 100 * r["selection"][mode]["test_mean"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
        ax.axhline(100 * rs[0]["majority_test"], color="grey", ls="--", label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("pre-training FLOPs")
        ax.set_ylabel("accuracy (%)" if task == "pubmedqa" else "micro-F1 (%)")
        ax.set_title(f"{task} ({MODE_NAMES[mode]})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(
    finetune: dict[str, Any],
    pretrain: dict[str, Any],
    modes: Sequence[str],
    plot_mode: str,
    out_dir: Path,
) -> dict[str, Any]:
    """Tables, plot and `results.json` into `out_dir`; returns what the evaluate manifest lists."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    results = summarize(finetune, pretrain, modes)
    tables = write_tables(results, modes, out_dir)
    mode = plot_mode if plot_mode in modes else modes[0]
    plot_path = plot(results, mode, out_dir / "accuracy_vs_flops.png")
    listing = [
        {
            "variant": r["variant"],
            "task": r["task"],
            "metric": r["metric"],
            "sparsity": r["sparsity"],
            "active_non_embedding_params": r["active_non_embedding_params"],
            "train_flops": r["train_flops"],
            "majority_test": r["majority_test"],
            "parent_run_id": r["parent_run_id"],
            **{
                m: {
                    k: r["selection"][m][k]
                    for k in (
                        "batch_size",
                        "lr",
                        "seeds",
                        "test_mean",
                        "test_std",
                        "dev_mean",
                        "dev_std",
                        "test_per_seed",
                        "dev_per_seed",
                    )
                }
                for m in modes
            },
        }
        for r in results
    ]
    write_atomic(out_dir / "results.json", json.dumps(listing, indent=2) + "\n")
    return {
        "tables": {t: {"md": v["md"], "csv": v["csv"]} for t, v in tables.items()},
        "table_text": {t: v["text"] for t, v in tables.items()},
        "plot": plot_path.name,
        "plot_mode": mode,
        "results": listing,
    }
