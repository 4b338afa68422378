"""One results table per downstream task (Tables 3 and 4 for PubMedQA and HoC; BC5CDR, DDI and
any other task lay theirs out in their own module), and the metric against pre-training FLOPs.

Each row: model, sparsity, active size (non-embedding parameters that are active during
pre-training, the paper's "size" column), pre-training FLOPs, then per prediction mode the test
metric's mean +/- standard deviation over seeds at the (batch, lr) chosen on dev, and that
choice; a task's `extra_metrics` (HoC in BioGPT's convention) get a row each under the model's
row, named by their label. A majority-class row gives the floor every number must be read
against. The CSV has every mode side by side; the Markdown has one table per mode, a page wide.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift.artifacts import write_atomic
from mediswift.finetune.formats import Label
from mediswift.finetune.grid import select
from mediswift.finetune.metrics import mean_std
from mediswift.finetune.registry import task_class
from mediswift.finetune.stats import bootstrap_interval, seed_predictions
from mediswift.finetune.task import ExtraMetric
from mediswift.manifests import (
    EvaluatedSweep,
    EvaluateManifest,
    ExtraScore,
    FinetuneManifest,
    PretrainManifest,
    Selection,
    Sweep,
    TableFiles,
)

SELECTION_RULE = (
    "Per prediction mode: the (batch, lr) with the best mean dev metric over seeds, among those "
    "with no seed whose dev predictions are degenerate (one constant label, or none) when any "
    "exists; ± is the standard deviation over its seeds; the 95% CI is a percentile bootstrap "
    "over test examples (500 resamples) of the seed-mean metric, the baseline's over the same "
    "examples; 'above baseline' marks an interval that lies wholly above the baseline's; '(!)' "
    "marks a choice with degenerate seeds. A task's extra metric (HoC's BioGPT convention) is "
    "scored at the same choice, never used to make it.\n"
)
MODE_NAMES = {"score": "constrained scoring", "generate": "greedy generation"}


def human(n: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


Predictions = tuple[list[list[Label | None]], list[Label]]


def chosen_predictions(
    home: Path, sweep: Sweep, mode: str, s: dict[str, Any]
) -> Predictions | None:
    """The test predictions of the chosen (batch, lr), a list per seed in seed order, and the
    gold labels; None when a point's predictions file is missing."""
    chosen = [p for p in sweep.points if (p.batch_size, p.lr) == (s["batch_size"], s["lr"])]
    chosen.sort(key=lambda p: p.seed)
    files = [home / p.unit / f"predictions_{mode}.jsonl" for p in chosen]
    if not files or not all(f.is_file() for f in files):
        return None
    return seed_predictions(files, "test")


def interval(task: str, found: Predictions | None) -> tuple[float, float] | None:
    """The bootstrap interval of the task metric on the chosen seeds' test predictions."""
    if found is None:
        return None
    return bootstrap_interval(task_class(task)().metric, *found)


def extra_scores(task: str, found: Predictions | None) -> dict[str, ExtraScore]:
    """The task's extra metrics on the chosen seeds' test predictions (none without them)."""
    if found is None:
        return {}
    per_seed, golds = found
    out = {}
    for name, extra in task_class(task).extra_metrics.items():
        values = [extra.fn(preds, golds) for preds in per_seed]
        mean, std = mean_std(values)
        ci = bootstrap_interval(extra.fn, per_seed, golds)
        out[name] = ExtraScore(
            label=extra.label, test_mean=mean, test_std=std, test_per_seed=values, test_ci95=ci
        )
    return out


def summarize(
    finetune: FinetuneManifest,
    pretrain: PretrainManifest,
    modes: Sequence[str],
    home: Path | None = None,
) -> list[EvaluatedSweep]:
    """One result per (variant, task): pre-training facts and the per-mode selection.

    A mode the task does not support (no candidate grammar) is left out of its selection."""
    variants = {v.name: v for v in pretrain.variants}
    out = []
    for sweep in finetune.sweeps:
        v = variants.get(sweep.variant)
        if v is None:
            raise ValueError(f"finetune sweep for unknown variant {sweep.variant!r}")
        task = finetune.tasks[sweep.task]
        points = [p.model_dump() for p in sweep.points]
        have = [m for m in modes if all(f"dev_{m}" in p["metrics"] for p in points)]
        selected = {}
        for m in have:
            s = select(points, m)
            found = chosen_predictions(home, sweep, m, s) if home is not None else None
            fields = {k: s[k] for k in Selection.model_fields if k in s}
            selected[m] = Selection(
                **fields,
                test_ci95=interval(sweep.task, found),
                extra_metrics=extra_scores(sweep.task, found),
            )
        out.append(
            EvaluatedSweep(
                variant=v.name,
                task=sweep.task,
                metric=sweep.metric,
                sparsity=v.sparsity,
                active_non_embedding_params=v.active_non_embedding_params,
                train_flops=v.train_flops,
                majority_test=task.majority.test,
                majority_test_ci95=task.majority.test_ci95,
                parent_run_id=sweep.parent_run_id,
                selected=selected,
                model=v.model,
            )
        )
    return out


def _pct(x: float, digits: int) -> str:
    return f"{100 * x:.{digits}f}"


def _ci(ci: tuple[float, float], base: tuple[float, float] | None, digits: int) -> str:
    """`[lo, hi]`, marked when it does not overlap the baseline's interval."""
    text = f"[{_pct(ci[0], digits)}, {_pct(ci[1], digits)}]"
    if base is not None and ci[0] > base[1]:
        return text + " above baseline"
    if base is not None and ci[1] < base[0]:
        return text + " below baseline"
    return text


def _mode_cells(
    mode: str,
    s: Selection | None,
    score: Selection | ExtraScore | None,
    base_ci: tuple[float, float] | None,
    digits: int,
) -> dict[str, str]:
    """One mode's cells of a row: `score` (the selection's own, or one of its extra metrics),
    its interval against the baseline's, and the choice `s` it was scored at."""
    name = MODE_NAMES[mode]
    ci = score.test_ci95 if score else None
    return {
        name: f"{_pct(score.test_mean, digits)} ± {_pct(score.test_std, digits)}" if score else "-",
        f"{name}: 95% CI": _ci(ci, base_ci, digits) if ci else "-",
        f"{name}: degenerate seeds": (
            f"{s.degenerate_seeds} of {len(s.seeds)}" + (" (!)" if s.degenerate_seeds else "")
            if s
            else "-"
        ),
        f"{name}: batch, lr (n seeds)": f"{s.batch_size}, {s.lr:g} ({len(s.seeds)})" if s else "-",
    }


def _model_cells(r: EvaluatedSweep, model: str) -> dict[str, str]:
    return {
        "model": model,
        "sparsity": f"{r.sparsity:.0%}",
        "active size": human(r.active_non_embedding_params),
        "pre-training FLOPs": f"{r.train_flops:.3g}",
    }


def extra_rows(
    r: EvaluatedSweep, extras: dict[str, ExtraMetric], modes: Sequence[str], digits: int
) -> list[dict[str, str]]:
    """A row per extra metric scored for `r`, under its model row and named by its label:
    rows, not columns, keep each mode's table a page wide. Its interval is not set against
    the baseline's, which is scored in the task's own metric."""
    rows = []
    for name, extra in extras.items():
        scores = {m: s.extra_metrics.get(name) for m, s in r.selected.items()}
        if not any(scores.values()):
            continue
        row = _model_cells(r, f"{r.variant} ({extra.label})")
        for m in modes:
            row |= _mode_cells(m, r.selected.get(m), scores.get(m), None, digits)
        rows.append(row)
    return rows


def table_rows(
    results: Sequence[EvaluatedSweep], task: str, modes: Sequence[str]
) -> list[dict[str, str]]:
    digits = task_class(task).table.digits
    extras = task_class(task).extra_metrics
    rows = []
    task_results = [r for r in results if r.task == task]
    for r in sorted(task_results, key=lambda r: (r.model, r.sparsity)):
        row = _model_cells(r, r.variant)
        for m in modes:
            s = r.selected.get(m)
            row |= _mode_cells(m, s, s, r.majority_test_ci95, digits)
        rows.append(row)
        rows += extra_rows(r, extras, modes, digits)
    if task_results:
        base = task_results[0]
        row = {
            "model": task_class(task).baseline_name,
            "sparsity": "-",
            "active size": "-",
            "pre-training FLOPs": "-",
        }
        for m in modes:
            # Only beside modes some model has: a task without a candidate grammar is never
            # scored, and a baseline figure alone in that column would read as a result.
            ran = any(m in r.selected for r in task_results)
            row[MODE_NAMES[m]] = _pct(base.majority_test, digits) if ran else "-"
            ci = base.majority_test_ci95
            row[f"{MODE_NAMES[m]}: 95% CI"] = _ci(ci, None, digits) if ci and ran else "-"
            row[f"{MODE_NAMES[m]}: degenerate seeds"] = "-"
            row[f"{MODE_NAMES[m]}: batch, lr (n seeds)"] = "-"
        rows.append(row)
    return rows


def mode_tables(rows: Sequence[dict[str, str]]) -> list[tuple[str, list[dict[str, str]]]]:
    """The task table as one table per prediction mode: the model columns, then that mode's
    result, interval, degenerate seeds and choice (8 columns: a page wide, where all modes side
    by side are 12). The cells are the same strings; only the `<mode>: ` prefix of a column name
    goes, since the table is titled by its mode. A mode no row has (every cell "-": the task was
    never run in it) is left out. Rows without mode columns come back as one table, untitled."""
    if not rows:
        return []
    cols = list(rows[0])
    modes = [c for c in cols if c in MODE_NAMES.values()]
    own = {m: [c for c in cols if c == m or c.startswith(f"{m}: ")] for m in modes}
    shared = [c for c in cols if not any(c in own[m] for m in modes)]
    if not modes:
        return [("", list(rows))]
    out = []
    for m in modes:
        if all(r[m] == "-" for r in rows):
            continue
        names = {c: "test, mean ± std" if c == m else c.removeprefix(f"{m}: ") for c in own[m]}
        out.append(
            (m, [{c: r[c] for c in shared} | {names[c]: r[c] for c in own[m]} for r in rows])
        )
    return out or [("", list(rows))]


def _grid(rows: Sequence[dict[str, str]]) -> list[str]:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    return lines + ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]


def markdown(rows: Sequence[dict[str, str]], title: str) -> str:
    """The task's table under `title`, one table per prediction mode (see `mode_tables`)."""
    if not rows:
        return f"**{title}**\n\n(no results)\n"
    lines = [f"**{title}**"]
    for mode, sub in mode_tables(rows):
        lines += ["", f"*Predictions by {mode}*", ""] if mode else [""]
        lines += _grid(sub)
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def tasks_in(results: Sequence[EvaluatedSweep]) -> list[str]:
    return list(dict.fromkeys(r.task for r in results))


def write_tables(
    results: Sequence[EvaluatedSweep], modes: Sequence[str], out_dir: Path
) -> dict[str, tuple[TableFiles, str]]:
    """One table per task (`<stem>.md`, `<stem>.csv`); returns {task: (files, markdown)}."""
    written = {}
    for task in tasks_in(results):
        layout = task_class(task).table
        rows = table_rows(results, task, modes)
        text = markdown(rows, f"{layout.title}, mean ± std over seeds") + "\n" + SELECTION_RULE
        write_atomic(out_dir / f"{layout.stem}.md", text)
        write_atomic(out_dir / f"{layout.stem}.csv", csv_text(rows))
        written[task] = (TableFiles(md=f"{layout.stem}.md", csv=f"{layout.stem}.csv"), text)
    return written


def _dense_size(r: EvaluatedSweep) -> float:
    """The model's size as the paper's Figure 1 draws it: non-embedding parameters, dense."""
    return r.active_non_embedding_params / max(1e-9, 1.0 - r.sparsity)


def _log_x_axis(ax: Any, xs: Sequence[float]) -> None:
    """A log x axis at least a decade wide, centred on the data. Left to itself, matplotlib zooms
    into a sliver such as 3.98e5-4.08e5 around one model size, which reads as a spread the data
    does not have; values within 30% of each other get their centre as the only tick."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    # Decades labelled, minor ticks not (at a panel's width their labels run into each other).
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(xs), max(xs)
    if hi >= 10 * lo:
        return
    centre = (lo * hi) ** 0.5
    half = max(10**0.5, 1.5 * (hi / lo) ** 0.5)
    ax.set_xlim(centre / half, centre * half)
    # Less than a decade of data: its own values as the ticks (one when they are close enough
    # for their labels to collide), so the axis names what was measured.
    ticks = [centre] if hi <= 1.3 * lo else [lo, hi]
    ax.set_xticks(ticks, [human(t) for t in ticks])
    ax.minorticks_off()


def _dodge(n_lines: int, xs: Sequence[float]) -> list[float]:
    """Factors on x that set the lines a little apart when every point sits at one x (one model
    size): their error bars would otherwise be drawn over each other."""
    if max(xs) > 1.01 * min(xs):
        return [1.0] * n_lines
    return [1.06 ** (i - (n_lines - 1) / 2) for i in range(n_lines)]


# Figures fit the report's column (about 1000 px) at their own size: two panels a row, text of
# 11 pt at 100 dpi (15 px). Points are told apart by marker (in the legend), not by labels
# beside them, which overlap when points share an x.
PANEL_COLUMNS = 2
FIGURE_DPI = 100
FONT_PT = 11
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Drawing:
    """What a figure draws: `x` of each result, one line per `line_of` value, a marker per
    `marker_of` value (None: one marker), and the labels of each."""

    x: Callable[[EvaluatedSweep], float]
    line_of: Callable[[EvaluatedSweep], Any]
    line_label: Callable[[Any], str]
    marker_of: Callable[[EvaluatedSweep], Any] | None
    marker_label: Callable[[Any], str]
    xlabel: str


def drawn_mode(rs: Sequence[EvaluatedSweep], mode: str) -> str:
    """`mode`, or greedy generation for a task some result lacks it for (no candidate grammar):
    the mode a task's figure panel and console line show."""
    return mode if all(mode in r.selected for r in rs) else "generate"


def _panels(results: Sequence[EvaluatedSweep], mode: str, path: Path, d: Drawing) -> Path:
    """Test metric (mean ± std over seeds) against `x`, one line per `line_of` value (a marker
    per `marker_of` value), one panel per task, with the task's baseline as a dashed line;
    written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tasks_in(results) or [""]
    cols = min(PANEL_COLUMNS, len(tasks))
    rows = -(-len(tasks) // cols)
    with plt.rc_context({"font.size": FONT_PT}):
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows), squeeze=False)
        for ax, task in zip(axes.flat, tasks, strict=False):
            rs = [r for r in results if r.task == task]
            if rs:
                _panel(ax, rs, mode, d)
        for ax in list(axes.flat)[len(tasks) :]:
            ax.set_visible(False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=FIGURE_DPI)
        plt.close(fig)
    tmp.replace(path)
    return path


def _panel(ax: Any, rs: Sequence[EvaluatedSweep], mode: str, d: Drawing) -> None:
    """One task's panel (see `_panels`)."""
    from matplotlib.lines import Line2D

    task, m = rs[0].task, drawn_mode(rs, mode)
    x, line_of, marker_of = d.x, d.line_of, d.marker_of
    lines = sorted({line_of(r) for r in rs})
    kinds = sorted({marker_of(r) for r in rs}) if marker_of else []
    marker = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(kinds)}
    for line, shift in zip(lines, _dodge(len(lines), [x(r) for r in rs]), strict=True):
        pts = sorted((r for r in rs if line_of(r) == line), key=x)
        xs, ys = [x(r) * shift for r in pts], [100 * r.selected[m].test_mean for r in pts]
        err = [100 * r.selected[m].test_std for r in pts]
        drawn = ax.errorbar(xs, ys, yerr=err, capsize=3, label=d.line_label(line),
                            marker=None if marker_of else "o")  # fmt: skip
        for r, px, y in zip(pts, xs, ys, strict=True) if marker_of else ():
            ax.plot(px, y, marker[marker_of(r)], color=drawn[0].get_color(), ms=7)
    baseline = task_class(task).baseline_name
    ax.axhline(100 * rs[0].majority_test, color="grey", ls="--", label=baseline)
    handles, labels = ax.get_legend_handles_labels()
    for k in kinds:  # what each marker stands for
        handles.append(Line2D([], [], color="black", marker=marker[k], ls="none"))
        labels.append(d.marker_label(k))
    _log_x_axis(ax, [x(r) for r in rs])
    ax.set_xlabel(d.xlabel)
    ax.set_ylabel(task_class(task).table.axis)
    ax.set_title(f"{task} ({MODE_NAMES[m]})")
    ax.legend(handles, labels, fontsize=FONT_PT - 2)


def _cell(name: str, x: float, ci: tuple[float, float] | None) -> str:
    span = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    return f"{name} {100 * x:.1f}{span}"


def summary(results: Sequence[EvaluatedSweep], mode: str, where: str) -> str:
    """One line per task for the console: each variant's test mean and 95% interval in `mode`
    (greedy generation for a task without it, as the figures draw it) beside the trivial
    baseline's; the whole tables are in the report (`where`)."""
    lines = [f"results on test (%, 95% interval; every table in {where}):"]
    for task in tasks_in(results):
        rs = [r for r in results if r.task == task]
        m = drawn_mode(rs, mode)
        cells = [_cell(r.variant, r.selected[m].test_mean, r.selected[m].test_ci95) for r in rs]
        base = _cell(task_class(task).baseline_name, rs[0].majority_test, rs[0].majority_test_ci95)
        lines.append(f"  {task} ({rs[0].metric}, {MODE_NAMES[m]}): {'; '.join(cells)}; {base}")
    return "\n".join(lines)


def plot(results: Sequence[EvaluatedSweep], mode: str, path: Path) -> Path:
    """Test metric against pre-training FLOPs, one line per model size, a marker per sparsity."""
    return _panels(results, mode, path, Drawing(
        lambda r: r.train_flops, lambda r: r.model, str,
        lambda r: r.sparsity, lambda s: f"s={s:.0%}", "pre-training FLOPs",
    ))  # fmt: skip


def plot_sizes(results: Sequence[EvaluatedSweep], mode: str, path: Path) -> Path:
    """The paper's Figure 1: test metric against model size, one line per sparsity level (with
    one size, each line is a single point; the x axis names the sizes)."""
    return _panels(results, mode, path, Drawing(
        _dense_size, lambda r: r.sparsity, lambda s: f"s={s:.0%}",
        None, str, "model size (non-embedding parameters)",
    ))  # fmt: skip


def write_report(
    finetune: FinetuneManifest,
    pretrain: PretrainManifest,
    modes: Sequence[str],
    plot_mode: str,
    out_dir: Path,
    home: Path | None = None,
) -> tuple[EvaluateManifest, dict[str, str]]:
    """Tables, plot and `results.json` into `out_dir`: the evaluate manifest (without its
    MLflow run) and each task's table as Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = summarize(finetune, pretrain, modes, home)
    tables = write_tables(results, modes, out_dir)
    mode = plot_mode if plot_mode in modes else modes[0]
    plot_path = plot(results, mode, out_dir / "accuracy_vs_flops.png")
    sizes_path = plot_sizes(results, mode, out_dir / "figure1_size_vs_metric.png")
    listing = [r.model_dump(mode="json") for r in results]
    write_atomic(out_dir / "results.json", json.dumps(listing, indent=2) + "\n")
    report = EvaluateManifest(
        tables={t: files for t, (files, _) in tables.items()},
        plot=plot_path.name,
        size_plot=sizes_path.name,
        plot_mode=mode,
        modes=list(modes),
        results=results,
    )
    return report, {t: text for t, (_, text) in tables.items()}
