"""Pre-training reports: the loss curves of all variants (the paper's Figure 2) and a table like
Table 2 (variant, active size, final losses, training FLOPs and their ratio to dense)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mediswift.artifacts import tmp_path


def read_curve(path: Path) -> list[dict[str, float | None]]:
    """Rows of a curve.csv: step, train_loss, val_loss (None where not evaluated), lr."""
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def plot_loss_curves(curves: dict[str, Path], out: Path, title: str = "Pre-training loss") -> Path:
    """Training loss (lines) and validation loss (markers) against step, one colour a variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, path) in enumerate(curves.items()):
        rows = read_curve(path)
        color = f"C{i}"
        ax.plot(
            [r["step"] for r in rows],
            [r["train_loss"] for r in rows],
            color=color,
            label=f"{name} train",
        )
        val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
        if val:
            ax.plot(*zip(*val, strict=True), "o--", color=color, ms=4, label=f"{name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(out)
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out


def human(n: float) -> str:
    """302.3M, 1.21B, 151K: the paper's way of writing sizes."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def flops_vs_dense(variants: list[dict[str, Any]]) -> dict[str, float]:
    """Each variant's training FLOPs over those of the dense run of its size trained for the
    recipe's steps (an iso-FLOPs baseline is dense but trained for fewer steps: its ratio is
    to that run, not to itself); a variant's own `flops_ratio` where no such run is listed."""
    dense = dense_runs(variants)
    return {
        v["name"]: v["train_flops"] / dense[v["model"]]["train_flops"]
        if v["model"] in dense
        else v["flops_ratio"]
        for v in variants
    }


def dense_runs(variants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Size -> the dense variant trained for the recipe's steps (not an iso-FLOPs baseline)."""
    return {v["model"]: v for v in variants if v["sparsity"] == 0 and not v.get("iso_flops_of")}


def table2(variants: list[dict[str, Any]]) -> str:
    """A Markdown table like the paper's Table 2, one row a variant record."""
    lines = [
        "| Variant | Size (active non-emb.) | Active params | Final train loss | "
        "Final val loss | Val ppl | Train FLOPs | vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = flops_vs_dense(variants)
    for v in variants:
        ratio = ratios[v["name"]]
        lines.append(
            f"| {v['name']} | {human(v['active_non_embedding_params'])} | "
            f"{human(v['active_params'])} | {v['final_train_loss']:.3f} | "
            f"{v['final_val_loss']:.3f} | {v['val_ppl']:.1f} | {v['train_flops']:.3e} | "
            f"{ratio:.2f}x |"
        )
    return "\n".join(lines)
