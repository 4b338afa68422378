"""lm-evaluation-harness on an export: the shipped local PubMedQA task runs offline.

Runs only where the optional `eval` extra is installed: CI installs it (`make install-eval`),
`make install` does not. A tiny GPT of 64 positions, trained (as far as the export knows) on
32, is exported and scored on PubMedQA test questions read from the mirror's raw files; lm_eval
must take the export's 32 positions as the model's context (it truncates the long abstracts to
fit, with a warning) and report an accuracy over the questions asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from mediswift.export import export_model  # noqa: E402
from mediswift.model.gpt import GPT, GPTConfig  # noqa: E402
from mediswift.text import moses  # noqa: E402
from mediswift.text.bpe import learn_bpe  # noqa: E402
from mediswift.text.tokenizer import Tokenizer, document_text, write_tokenizer_config  # noqa: E402
from mediswift.train.checkpoint import save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "deployments" / "lm_eval"
TRAINED = 32
QUESTIONS = 6


def tiny_export(mirror_dir: Path, root: Path) -> Path:
    rows = [json.loads(x) for x in (mirror_dir / "corpus" / "biomed_text.jsonl").open()]
    texts = [document_text(r.get("title"), r.get("text")) for r in rows[::20]]
    learn_bpe((moses.moses_tokenize(t) for t in texts), root / "tok" / "bpe.model", 1000)
    write_tokenizer_config(root / "tok")
    vocab = Tokenizer.load(root / "tok").vocab_size
    torch.manual_seed(0)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=vocab, block_size=64))
    save_checkpoint(root / "ckpt", lm)
    return export_model(root / "ckpt", root / "tok", root / "hf", trained_len=TRAINED)


@pytest.mark.subprocess
def test_local_pubmedqa_task_runs_offline(tmp_path: Path, mirror_dir: Path) -> None:
    out = tiny_export(mirror_dir, tmp_path)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "MEDISWIFT_PUBMEDQA": str(mirror_dir / "pubmedqa"),
    }
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={out},trust_remote_code=True",
        "--tasks", "mediswift_pubmedqa", "--include_path", str(TASKS),
        "--device", "cpu", "--batch_size", "4", "--limit", str(QUESTIONS),
        "--output_path", str(tmp_path / "results"),
    ]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"exceeds model's maximum length ({TRAINED})" in run.stderr
    results = json.loads(next((tmp_path / "results").rglob("results_*.json")).read_text())
    scores = results["results"]["mediswift_pubmedqa"]
    assert 0.0 <= scores["acc,none"] <= 1.0
    assert results["n-samples"]["mediswift_pubmedqa"]["effective"] == QUESTIONS
