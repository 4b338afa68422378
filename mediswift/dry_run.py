"""The dry run: what a recipe would do in a home (stage keys and states, each variant's
training FLOPs, the fine-tuning grid, and accelerator-hours, disk and download estimates),
running nothing. `mediswift run --dry-run` prints it; the `plan` deployment publishes it."""

from __future__ import annotations

from pathlib import Path

from mediswift.baselines import iso_flops_baselines
from mediswift.config import PipelineConfig
from mediswift.graph import plan
from mediswift.names import iso_flops_name


def _tokens(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def dry_run(
    cfg: PipelineConfig, home: Path, stages: list[str], gpu: str = "h100", mfu: float = 0.4
) -> str:
    from mediswift.estimate import describe, estimate
    from mediswift.flops import main_flops

    arts = plan(cfg, home)
    pt = cfg.pretrain
    tokens = pt.tokens
    lines = [f"recipe {cfg.name}: home {home}", f"mirror: {cfg.mirror or 'none (upstream)'}", ""]
    lines.append("stage      key               state")
    for stage in stages:
        state = "done" if arts[stage].done() else "to run"
        lines.append(f"{stage:<10} {arts[stage].key}  {state}")
    lines += [
        "",
        f"pre-training: model {', '.join(pt.sizes)}, {pt.steps:,} steps x batch "
        f"{pt.global_batch} x MSL {pt.seq_len} = {_tokens(tokens)} tokens per variant",
    ]
    variants = 0
    for size in pt.sizes:
        dense = main_flops(size, 0.0, tokens, cfg.vocab.vocab_size, pt.seq_len)
        for s in pt.sparsity_levels:
            f = main_flops(size, s, tokens, cfg.vocab.vocab_size, pt.seq_len)
            lines.append(
                f"  {size} sparsity {s:.2f} ({pt.sparsity_method}): {f:.3e} FLOPs "
                f"({f / dense:.2f}x dense)"
            )
        for s, steps in iso_flops_baselines(pt, size, cfg.vocab.vocab_size):
            lines.append(
                f"  {iso_flops_name(size, s)}: dense, {steps:,} steps (the FLOPs of sparsity "
                f"{s:.2f}), its own warmup and cosine schedule: the iso-FLOPs baseline"
            )
            variants += 1
        variants += len(pt.sparsity_levels)
    ft = cfg.finetune
    n = 0
    for name, task in ft.tasks.items():
        points = len(task.grid.batch_sizes) * len(task.grid.learning_rates) * len(ft.seeds)
        n += points
        lines.append(
            f"  {name}: {points} runs per variant (batch {task.grid.batch_sizes} x lr "
            f"{task.grid.learning_rates} x seeds {ft.seeds}), {task.epochs} epochs, "
            f"{task.prompt_tokens} prompt tokens"
        )
    lines.append(
        f"fine-tuning: {n} runs per variant ({', '.join(ft.tasks)}), "
        f"{n * variants} in all ({variants} variants)"
    )
    if cfg.download.track_upstream:
        lines.append("download key: follows the upstream PubMed listing (listed at run time)")
    lines += ["", *describe(estimate(cfg, gpu, mfu))]
    return "\n".join(lines)
