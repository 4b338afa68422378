"""Training FLOPs: every row of the paper's Table 6 within 1%."""

from __future__ import annotations

import pytest

from mediswift.flops import flops_for, main_flops, training_flops

TOKENS = 104.86e9
# Table 6: (size, sparsity) -> train FLOPs in units of 1e20, and the ratio to dense.
TABLE6 = {
    ("med", 0.0): (2.677, 1.00),
    ("med", 0.5): (1.727, 0.64),
    ("med", 0.75): (1.252, 0.46),
    ("large", 0.0): (4.248, 1.00),
    ("large", 0.5): (2.645, 0.62),
    ("large", 0.75): (1.840, 0.43),
    ("xl", 0.0): (9.148, 1.00),
    ("xl", 0.5): (5.348, 0.58),
    ("xl", 0.75): (3.448, 0.38),
}


@pytest.mark.parametrize(("size", "sparsity"), list(TABLE6))
def test_table6_row_within_1_percent(size: str, sparsity: float) -> None:
    paper, ratio = TABLE6[(size, sparsity)]
    ours = flops_for(size, sparsity, TOKENS)
    assert abs(ours / (paper * 1e20) - 1) < 0.01, ours
    assert abs(ours / flops_for(size, 0.0, TOKENS) - ratio) < 0.01


def test_main_flops_is_the_cli_number() -> None:
    assert main_flops("xl", 0.75, 104.86e9) == flops_for("xl", 0.75, TOKENS)
    assert main_flops("med", 0.0, "104.86e9") == flops_for("med", 0.0, TOKENS)  # type: ignore[arg-type]


def test_sparsity_scales_only_the_six_matrices() -> None:
    dense = training_flops(24, 1024, 16, 42_384, 1024, TOKENS)
    sparse = training_flops(24, 1024, 16, 42_384, 1024, TOKENS, sparsity=0.75)
    assert sparse.embeddings == dense.embeddings and sparse.logits == dense.logits
    assert sparse.attention_scores == dense.attention_scores
    assert sparse.dense_block == pytest.approx(0.25 * dense.dense_block)
    assert sparse.attention_matrices == pytest.approx(0.25 * dense.attention_matrices)


def test_matrix_flops_are_6_n_d() -> None:
    # The sparsifiable matrices hold 12 L d^2 weights: 6 FLOPs per weight per token.
    b = training_flops(24, 1024, 16, 42_384, 1024, TOKENS)
    assert b.attention_matrices + b.dense_block == pytest.approx(6 * 12 * 24 * 1024**2 * TOKENS)


def test_bad_sparsity_is_refused() -> None:
    with pytest.raises(ValueError):
        flops_for("med", 1.0, TOKENS)


def test_paper_recipe_dry_run_prints_all_nine_table6_rows(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import re

    from mediswift.cli import main

    assert main(["run", "--recipe", "paper", "--dry-run", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    printed = {
        (m.group(1), float(m.group(2))): float(m.group(3))
        for m in re.finditer(
            r"  [\w-]+: (\w+) sparsity ([\d.]+) \(static\), [^:]*: ([\d.e+]+) FLOPs", out
        )
    }
    assert set(printed) == set(TABLE6)
    for key, (paper, _) in TABLE6.items():
        assert printed[key] / 1e20 == pytest.approx(paper, rel=0.01)
    # 9 variants + 6 iso-FLOPs dense baselines, x (48 PubMedQA + 36 HoC) grid points
    assert "1260 in all (15 variants)" in out
    assert (
        "  xl-dense-iso75: xl dense, the FLOPs of sparsity 0.75 (its own schedule): the "
        "iso-FLOPs baseline, 75,372 steps" in out
    )


def test_dry_run_estimates_gpu_hours_disk_and_download(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from mediswift.cli import main
    from mediswift.config import load_recipe
    from mediswift.estimate import GPU_PEAKS, estimate

    cfg = load_recipe("paper-xl")
    h100, a100 = estimate(cfg, "h100", 0.4), estimate(cfg, "a100", 0.4)
    dense = 9.148e20  # Table 6, XL dense: every variant is priced at dense speed on a GPU
    assert h100.gpu_hours["xl-s75"] == pytest.approx(
        dense / (GPU_PEAKS["h100"] * 0.4) / 3600, rel=0.01
    )
    assert a100.gpu_hours["xl-dense"] / h100.gpu_hours["xl-dense"] == pytest.approx(989 / 312)
    # 3 levels + 2 iso-FLOPs dense baselines; the 3 dense runs alone: weights + Adam + masks
    assert h100.disk_bytes["checkpoints (5 variants)"] > 3 * 1.3e9 * 13
    # The two sparse ones store their masked matrices as kept values + bits (format 2)
    assert h100.dense_checkpoint_bytes - h100.disk_bytes["checkpoints (5 variants)"] > 40e9
    with pytest.raises(ValueError, match="unknown GPU"):
        estimate(cfg, "tpu")
    args = ["run", "--recipe", "paper-xl", "--dry-run", "--home", str(tmp_path), "--gpu", "a100"]
    assert main([*args, "--mfu", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "A100 bf16 peak 312 TFLOP/s at 50% MFU" in out and "disk in all" in out
    assert "with every tensor stored dense" in out
