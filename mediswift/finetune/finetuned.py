"""A fine-tuned model in and out: the dense start from a pre-trained checkpoint, and the saved
best state of a unit (the language model as `mediswift.train.checkpoint` lays it out, plus its
soft prompt).

Loading a pre-trained checkpoint is strict and drops its masks: the weights they held inactive
start at zero (they are zero in a sparse checkpoint already; `reactivate` makes sure) and train
densely (Section 2.2.1).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mediswift.artifacts import tmp_path
from mediswift.model.gpt import GPT
from mediswift.model.soft_prompt import PromptedLM
from mediswift.train.checkpoint import load_masks, load_model, save_checkpoint

PROMPT_FILE = "prompt.safetensors"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def reactivate(lm: GPT, masks: dict[str, torch.Tensor]) -> int:
    """Drop the masks: every masked weight starts at exactly zero and is trainable from now on.

    Returns how many weights were reactivated.
    """
    params = dict(lm.named_parameters())
    n = 0
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, which the model does not have")
        p = params[name]
        if mask.shape != p.shape:
            raise ValueError(
                f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(p.shape)}"
            )
        p.mul_(mask.to(p.device, p.dtype))
        n += int((~mask.bool()).sum())
    return n


def load_pretrained(
    checkpoint: Path, n_prompt_tokens: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[PromptedLM, dict[str, int]]:
    """A dense PromptedLM from a (possibly sparse) pre-training checkpoint."""
    lm = load_model(checkpoint, device)
    reactivated = reactivate(lm, load_masks(checkpoint))
    model = PromptedLM(lm, n_prompt_tokens).to(device)
    model.prompt.init_from_vocab(lm.wte, torch.Generator().manual_seed(seed))
    return model, {"reactivated": reactivated, "params": sum(p.numel() for p in model.parameters())}


def save_finetuned(path: Path, model: PromptedLM) -> Path:
    save_checkpoint(path, model.lm)
    tmp = tmp_path(path / PROMPT_FILE)
    save_file({"weight": model.prompt.weight.detach().cpu().contiguous()}, str(tmp))
    tmp.replace(path / PROMPT_FILE)
    return path


def load_finetuned(path: Path, device: torch.device | str = "cpu") -> PromptedLM:
    """A fine-tuned checkpoint written by `save_finetuned` (strict, no pickle)."""
    lm = load_model(path, device)
    weight = load_file(str(Path(path) / PROMPT_FILE))["weight"]
    model = PromptedLM(lm, weight.shape[0]).to(device)
    with torch.no_grad():
        model.prompt.weight.copy_(weight)
    return model
