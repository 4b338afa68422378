"""Every benchmark still runs against the code it measures, at a tiny size.

The benchmarks call the library's functions, stage flows and manifests directly, so a change
there can break one without any other test noticing (the tokenization benchmark's Prefect part
once failed for weeks on a manifest field that had become required). Each runs here as a user
runs it, in its own process, with small arguments, and must finish and print its comparison
line. Nothing about speed is checked: the figures at these sizes mean nothing.

`scale.py` (~90 s even at its smallest) and `finetune_decoding.py` (~25 s, fixed sizes) are
left out to keep the suite's time; `make bench` runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

# (script, its arguments, a line its report must print)
RUNS = [
    (
        "parse.py",
        ["--target-mb", "0.3", "--pmc-repeat", "1", "--rounds", "1", "--skip-10x"],
        "PMC ours vs parse_pubmed_paragraph:",
    ),
    ("checkpoint.py", ["--sizes", "small", "--repeats", "1", "--vocab", "2000"], "| small | 75% |"),
    (
        "train.py",
        ["--steps", "1", "--rounds", "1", "--vocab", "1000", "--seq-len", "64", "--batch", "2"],
        "mask upkeep:",
    ),
    ("download.py", ["--mb", "2", "--rounds", "1"], "172 PMC files, 86 md5-checked"),
    (
        "pmc_listing.py",
        ["--articles", "3000", "--sample", "300", "--latency-sample", "100"],
        "metadata, from the store:",
    ),
    (
        "sparse_matmul.py",
        ["--quick", "--sizes", "med", "--no-paper", "--budget", "1", "--plot", ""],
        "| med attn 1024x1024 | 75% |",
    ),
    ("gpu_check.py", ["--dry-run"], "spmm: sparse_matmul.py on cuda"),
    (
        "tokenization.py",
        ["--vocab-size", "500", "--shards", "2"],
        "== tokenize stage through Prefect",
    ),
]


@pytest.mark.parametrize(("script", "args", "expected"), RUNS, ids=[r[0] for r in RUNS])
def test_benchmark_runs(
    script: str, args: list[str], expected: str, mirror_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=tmp_path,  # anything a benchmark writes beside it lands here, not in the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert expected in out, out[-3000:]
