"""The dry run: what a recipe would do in a home (stage keys and states, each variant's
training FLOPs, the fine-tuning grid, and accelerator-hours, disk and download estimates),
running nothing. `mediswift run --dry-run` prints it; the `plan` deployment publishes it."""

from __future__ import annotations

from pathlib import Path

from mediswift.arms import arms
from mediswift.artifacts import Artifact
from mediswift.baselines import PlannedVariant, planned_variants
from mediswift.checkpoint_size import active_non_embedding
from mediswift.claims import pairs
from mediswift.config import PipelineConfig
from mediswift.flops import main_flops
from mediswift.model.sizes import size as model_size


def _tokens(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def dry_run(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Artifact],
    stages: list[str],
    gpu: str = "h100",
    mfu: float = 0.4,
) -> str:
    """`arts`: every stage's planned output (`flows.registry.plan`); `stages`: those shown."""
    from mediswift.estimate import describe, estimate

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
    lines.append(f"devices: pre-training {pt.device}, fine-tuning {cfg.finetune.device}")
    planned = planned_variants(pt, cfg.vocab.vocab_size)
    lines += pretrain_lines(cfg, planned)
    variants = len(planned)
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


def planned_records(cfg: PipelineConfig, planned: list[PlannedVariant]) -> list[dict]:
    """What the pretrain stage will record of each variant, as far as the claims pair them."""
    pt, vocab = cfg.pretrain, cfg.vocab.vocab_size
    out = []
    for p in planned:
        s = model_size(p.model)
        tokens = p.steps * pt.global_batch * pt.seq_len
        out.append(
            {
                "name": p.name, "arm": p.arm, "model": p.model, "sparsity": p.sparsity,
                "seed": p.seed, "iso_flops_of": p.iso_flops_of, "final_val_loss": float("nan"),
                "train_flops": main_flops(p.model, p.sparsity, tokens, vocab, pt.seq_len),
                "non_embedding_params": active_non_embedding(s.n_layer, s.d_model, 0.0),
                "active_non_embedding_params": active_non_embedding(
                    s.n_layer, s.d_model, p.sparsity
                ),
            }
        )  # fmt: skip
    return out


def pretrain_lines(cfg: PipelineConfig, planned: list[PlannedVariant]) -> list[str]:
    """Each arm (its seeds, FLOPs, active non-embedding parameters), then the pairs the claims
    will compare and the precondition arm of each."""
    pt, lines = cfg.pretrain, []
    records = planned_records(cfg, planned)
    for a in arms(records):
        dense = main_flops(a.model, 0.0, pt.tokens, cfg.vocab.vocab_size, pt.seq_len)
        kind = (
            f"dense, the FLOPs of sparsity {a.iso_flops_of:.2f} (its own schedule): the "
            "iso-FLOPs baseline"
            if a.iso_flops_of is not None
            else f"sparsity {a.sparsity:.2f} ({pt.sparsity_method})"
        )
        first = next(p for p in planned if p.arm == a.name)
        lr = first.lr if first.lr is not None else pt.lr
        lines.append(
            f"  {a.name}: {a.model} {kind}, {first.steps:,} steps at peak lr {lr:g}, "
            f"{a.seeds_text()}: "
            f"{a.train_flops:.3e} FLOPs each ({a.train_flops / dense:.2f}x {a.model} dense), "
            f"{a.active:,} active non-embedding parameters"
        )
    for p in pairs(arms(records)):
        kind = "equal active non-embedding parameters" if p.equal_active else "iso-FLOPs variant"
        gate = p.gate.name if p.gate is not None else "none (claims 1-2 cannot decide)"
        lines.append(
            f"  compared ({kind}): {p.big.name} vs {p.small.name}, {p.big.active:,} vs "
            f"{p.small.active:,} active ({p.big.active / p.small.active:.2f}x), "
            f"{p.flops_ratio:.2f}x the FLOPs; precondition arm {gate}"
        )
    return lines
