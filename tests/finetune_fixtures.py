"""A home ready for the finetune stage: a small tokenizer learned on task text and two tiny
pre-trained checkpoints (dense and 50% sparse), for the fine-tuning flow tests."""

from __future__ import annotations

from pathlib import Path

import torch

from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.finetune.hoc import HoC, hoc_splits
from mediswift.finetune.pubmedqa import PubMedQA, pqal_splits
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.text import moses
from mediswift.text.bpe import learn_bpe
from mediswift.text.tokenizer import Tokenizer, write_tokenizer_config
from mediswift.train.checkpoint import save_checkpoint

RECIPE = """name: finetune-test
finetune:
  seeds: [0, 1]
  patience: 1
  max_len: 128
  eval_batch_size: 12
  concurrency: 2
  tasks:
    pubmedqa:
      grid: {batch_sizes: [8], learning_rates: [1.0e-3, 3.0e-4]}
      epochs: 1
      max_train_examples: 16
      max_eval_examples: 12
    hoc:
      grid: {batch_sizes: [8], learning_rates: [1.0e-3]}
      epochs: 1
      max_train_examples: 16
      max_eval_examples: 12
"""


def make_home(
    root: Path, mirror: Path, recipe_text: str = RECIPE, mirror_in_recipe: bool = True
) -> tuple[Path, Path]:
    """The recipe file and the home; `mirror_in_recipe=False`: the recipe names no mirror (a
    run is given it, as `mediswift run --mirror` does)."""
    recipe = root / "recipe.yaml"
    recipe.write_text(recipe_text + (f"mirror: {mirror}\n" if mirror_in_recipe else ""))
    home = root / "home"
    arts = plan(load_recipe(str(recipe), mirror=str(mirror)), home)
    # vocab: a small tokenizer learned on task text (the tasks' files come from the mirror).
    vdir = arts["vocab"].ensure().path
    pqa = pqal_splits(
        mirror / "pubmedqa" / "ori_pqal.json", mirror / "pubmedqa" / "test_ground_truth.json"
    )
    hoc = hoc_splits(*(mirror / "hoc" / f"{s}.tsv" for s in ("train", "dev", "test")))
    texts = [e.source + " " + e.target for e in pqa["train"][:100] + hoc["train"][:60]]
    texts += HoC().all_targets() + PubMedQA().all_targets()
    learn_bpe((moses.moses_tokenize(t) for t in texts), vdir / "bpe.model", 600)
    write_tokenizer_config(vdir)
    tok = Tokenizer.load(vdir)
    arts["vocab"].write_manifest(
        {"vocab_size": tok.vocab_size, "hash": tok.hash, "special_ids": tok.special_ids}
    )
    # pretrain: a dense and a 50% sparse tiny checkpoint.
    variants = []
    for name, s in (("tiny-dense", 0.0), ("tiny-s50", 0.5)):
        torch.manual_seed(0)
        lm = GPT(
            GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=tok.vocab_size, block_size=128)
        )
        masks = {}
        if s:
            g = torch.Generator().manual_seed(0)
            masks = {
                n: torch.rand(lm.get_parameter(n).shape, generator=g) >= s
                for n in lm.matrix_names()
            }
            with torch.no_grad():
                for n, m in masks.items():
                    lm.get_parameter(n).mul_(m)
        rel = f"pretrain/ckpt/{name}"
        save_checkpoint(home / rel, lm, masks=masks or None)
        non_emb = lm.num_params(non_embedding=True)
        variants.append(
            {
                "name": name,
                "model": "tiny",
                "sparsity": s,
                "method": "static",
                "checkpoint": rel,
                "loss_curve": f"{rel}.csv",
                "total_params": lm.num_params(),
                "non_embedding_params": non_emb,
                "active_params": lm.num_params() - int(s * non_emb),
                "active_non_embedding_params": int((1 - s) * non_emb),
                "train_flops": 1e12 * (1 - 0.4 * s),
                "flops_ratio": 1 - 0.4 * s,
            }
        )
    arts["pretrain"].ensure().write_manifest(
        {"variants": variants, "loss_plot": "none.png", "table": "none.md"}
    )
    return recipe, home
