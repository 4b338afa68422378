"""Export a MediSwift checkpoint as a Hugging Face model directory (GPT-2 architecture).

Our GPT is GPT-2's computation under other parameter names: pre-LayerNorm blocks, learned
positions, exact GELU, attention scaled by 1/sqrt(head size), a final LayerNorm and an output
layer tied to the token embedding. So a checkpoint maps onto `GPT2LMHeadModel` without any
custom modelling code: q, k and v are fused into `c_attn`, and every matrix is transposed because
GPT-2's `Conv1D` stores weights as (in, out) where `nn.Linear` stores (out, in). A model trained
without biases gets zero biases (GPT-2 always has them; adding zero changes nothing).

The tokenizer cannot be a stock one: ids come from Moses pre-tokenization followed by our
sentencepiece BPE model. The export carries a small `PreTrainedTokenizer` subclass
(`mediswift/hf/tokenization_mediswift.py`, copied verbatim) that `AutoTokenizer` loads with
`trust_remote_code=True`.

Only the positions the model was trained on are exported: a checkpoint has `block_size` rows of
position embedding, but pre-training fills only the first `seq_len` (a fine-tuned point: its
`max_len`); the rows beyond never get a gradient (only weight decay shrinks them). `n_positions`
(config) and `model_max_length` (tokenizer) state that trained length, so transformers and
lm-evaluation-harness truncate or warn before reaching an untrained position.

A sparse checkpoint is exported as it is: its masked weights are exact zeros, stored densely
(transformers has no sparse GPT-2), and the card records the sparsity.

A fine-tuned point generates as the pipeline evaluated it only with its soft prompt after the
source, which no stock class does: its export is `MediSwiftPromptedLM`, a `GPT2LMHeadModel`
subclass shipped as `mediswift/hf/modeling_mediswift.py` (copied verbatim, loaded with
`trust_remote_code=True`) that carries the prompt among its weights and whose `generate` cuts
the source to the point's budget and puts the prompt after it. The prompt is also kept as
`soft_prompt.safetensors` for code that feeds it through `inputs_embeds` itself.

Nothing here needs `transformers`: the files are written from their documented layout, so an
export can be made on a machine without it (the tests load every export with transformers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mediswift.export_card import SOFT_PROMPT_FILE, model_card
from mediswift.model.gpt import BLOCK_MATRICES, GPTConfig
from mediswift.text.tokenizer import CONFIG_FILE as TOKENIZER_CONFIG
from mediswift.text.tokenizer import MODEL_FILE as BPE_MODEL
from mediswift.text.tokenizer import Tokenizer
from mediswift.train.checkpoint import load_masks, read_config, read_weights

HF_CONFIG_FILE = "config.json"
HF_GENERATION_FILE = "generation_config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_SPECIAL_TOKENS_FILE = "special_tokens_map.json"
TOKENIZER_MODULE = "tokenization_mediswift"
TOKENIZER_CLASS = "MediSwiftTokenizer"
TOKENIZER_SOURCE = Path(__file__).parent / "hf" / f"{TOKENIZER_MODULE}.py"
# A fine-tuned point's model class: GPT-2 that puts its soft prompt after the source.
MODELING_MODULE = "modeling_mediswift"
PROMPTED_MODEL_CLASS = "MediSwiftPromptedLM"
PROMPTED_CONFIG_CLASS = "MediSwiftPromptedConfig"
PROMPTED_MODEL_TYPE = "mediswift_prompted"
MODELING_SOURCE = Path(__file__).parent / "hf" / f"{MODELING_MODULE}.py"
SOFT_PROMPT_WEIGHT = "soft_prompt"  # the prompt's name among the model's weights
DEFAULT_MAX_NEW_TOKENS = 16  # a point's generation length when the caller does not know it
CARD_FILE = "README.md"
EXPORT_FORMAT = 1
# The special pieces of our sentencepiece models (`mediswift.text.bpe`), by role.
SPECIAL_PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}

# The GPTConfig fields whose effect on the computation `hf_config`/`hf_state_dict` reproduce. A
# new field (another activation, norm or position scheme) must be mapped here before export
# can claim equal logits, so an unknown one stops the export instead of exporting silently.
SUPPORTED_CONFIG = frozenset(
    {"n_layer", "n_head", "d_model", "vocab_size", "block_size", "dropout", "bias"}
)


def export_model(
    checkpoint_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    card: dict[str, Any] | None = None,
    prompt: Path | None = None,
    trained_len: int | None = None,
    *,
    source_budget: int | None = None,
    max_new_tokens: int | None = None,
) -> Path:
    """Write checkpoint `checkpoint_dir` (our layout, dense or sparse) with the tokenizer in
    `tokenizer_dir` (the vocab stage's output) as a Hugging Face model directory `out_dir`.

    `card`: what the caller knows about the model (`CARD_FIELDS`; a pre-train variant record and
    metrics), rendered into the model card. `prompt`: a fine-tuned point's `prompt.safetensors`,
    exported as `soft_prompt.safetensors`. `trained_len`: the sequence length the weights were
    trained on (None: every position of the checkpoint); only those positions are exported. The
    directory is built beside `out_dir` and renamed into place, so `out_dir` is either a complete
    export or absent; an existing `out_dir` is replaced only if it is an earlier export. Returns
    `out_dir`.

    With a prompt, the model is `MediSwiftPromptedLM` (`mediswift/hf/modeling_mediswift.py`,
    shipped in the export, loaded with `trust_remote_code=True`), carrying the prompt among its
    weights: its `generate` predicts as the pipeline evaluated the point, the source cut to
    `source_budget` tokens and at most `max_new_tokens` generated (the point's manifest has
    both; None: all the source that leaves room for the default 16 new tokens).
    """
    checkpoint_dir, tokenizer_dir, out_dir = (
        Path(checkpoint_dir),
        Path(tokenizer_dir),
        Path(out_dir),
    )
    cfg, tok = _checked_model(checkpoint_dir, tokenizer_dir)
    block_size = cfg.block_size
    cfg, weights = trained_positions(cfg, read_weights(checkpoint_dir), trained_len)
    if out_dir.is_symlink():  # replace what the link names; the link stays as the user made it
        out_dir = out_dir.resolve()
    _check_replaceable(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_export(tmp, checkpoint_dir, tokenizer_dir, cfg, tok, weights, dict(card or {}),
                      prompt, block_size, source_budget, max_new_tokens, out_dir.name)  # fmt: skip
        _check_only_exported_files(out_dir, tmp)
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_export(
    tmp: Path,
    checkpoint_dir: Path,
    tokenizer_dir: Path,
    cfg: GPTConfig,
    tok: Tokenizer,
    weights: dict[str, torch.Tensor],
    card: dict[str, Any],
    prompt: Path | None,
    block_size: int,
    source_budget: int | None,
    max_new_tokens: int | None,
    default_name: str,
) -> None:
    """Every file of the export into the empty directory `tmp` (see `export_model`)."""
    n_prompt = copy_prompt(Path(prompt), tmp, cfg.d_model) if prompt is not None else 0
    config = hf_config(cfg, tok.special_ids, _dtype_name(weights))
    config["mediswift"]["checkpoint_block_size"] = block_size
    generation = generation_config(tok.special_ids)
    state = hf_state_dict(cfg, weights)
    if n_prompt:
        max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        budget = source_budget or cfg.block_size - n_prompt - max_new
        config, generation = prompted_config(config, generation, n_prompt, budget, max_new)
        state[SOFT_PROMPT_WEIGHT] = load_file(str(tmp / SOFT_PROMPT_FILE))["weight"]
        shutil.copyfile(MODELING_SOURCE, tmp / f"{MODELING_MODULE}.py")
    _write_json(tmp / HF_CONFIG_FILE, config)
    _write_json(tmp / HF_GENERATION_FILE, generation)
    save_file(state, str(tmp / HF_WEIGHTS_FILE), metadata={"format": "pt"})
    write_tokenizer(tokenizer_dir, tmp, cfg.block_size)
    stats = sparsity_stats(cfg, weights, load_masks(checkpoint_dir))
    text = model_card(str(card.get("name") or default_name), cfg, tok, stats, card, n_prompt)
    (tmp / CARD_FILE).write_text(text, encoding="utf-8")


def _checked_model(checkpoint_dir: Path, tokenizer_dir: Path) -> tuple[GPTConfig, Tokenizer]:
    """The checkpoint's model settings and the tokenizer, refused when the export would not
    reproduce the model or they do not belong together."""
    cfg = read_config(checkpoint_dir)
    unknown = set(cfg.to_dict()) - SUPPORTED_CONFIG
    if unknown:
        raise ValueError(
            f"{checkpoint_dir}: model setting(s) {sorted(unknown)} have no GPT-2 mapping in "
            "mediswift.export yet; exporting would not reproduce the model"
        )
    tok = Tokenizer.load(tokenizer_dir)  # checks that bpe.model matches tokenizer.json
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(
            f"{checkpoint_dir}: the model's vocabulary ({cfg.vocab_size}) is smaller than the "
            f"tokenizer's ({tok.vocab_size}): they do not belong together"
        )
    return cfg, tok


# --- Model -----------------------------------------------------------------------------------


def trained_positions(
    cfg: GPTConfig, weights: dict[str, torch.Tensor], trained_len: int | None
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The config and weights cut to the first `trained_len` positions (None: all of them).

    Rows of the position embedding past the training length were never updated: exporting them
    would advertise a context the model cannot use (lm-evaluation-harness reads `n_positions` as
    the context to fill). The computation of every position kept is unchanged. A length at or
    past the checkpoint's positions keeps them all: the training cannot have used more (a recipe
    whose `seq_len` exceeds the checkpoint's context did not train that checkpoint's rows alone).
    """
    if trained_len is None or trained_len >= cfg.block_size:
        return cfg, weights
    if trained_len < 1:
        raise ValueError(f"trained length {trained_len}: a model needs at least one position")
    cut = dict(weights)
    cut["wpe.weight"] = weights["wpe.weight"][:trained_len]
    return dataclasses.replace(cfg, block_size=trained_len), cut


def hf_config(cfg: GPTConfig, special_ids: dict[str, int], dtype: str) -> dict[str, Any]:
    """`config.json` of the equivalent `GPT2LMHeadModel`.

    Every setting that changes the computation is spelled out rather than left to transformers'
    defaults (GPT-2's default activation is the tanh approximation, ours is exact GELU).
    """
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.d_ff,
        "activation_function": "gelu",  # F.gelu: the exact erf form, not "gelu_new" (tanh)
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default, which the model uses
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,  # scaled_dot_product_attention's 1/sqrt(head size)
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "pad_token_id": special_ids["pad"],
        "torch_dtype": dtype,
        "mediswift": {"export_format": EXPORT_FORMAT, "model": cfg.to_dict()},
    }


def generation_config(special_ids: dict[str, int]) -> dict[str, Any]:
    """`generation_config.json`: stop at our eos, pad with our pad (greedy by default)."""
    return {
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "pad_token_id": special_ids["pad"],
        "do_sample": False,
    }


def prompted_config(
    config: dict[str, Any],
    generation: dict[str, Any],
    n_prompt: int,
    source_budget: int,
    max_new_tokens: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`config.json` and `generation_config.json` of a fine-tuned point: our model class in
    place of `GPT2LMHeadModel` (found through `auto_map`; its own model type, so that loading
    it without `trust_remote_code=True` fails instead of dropping the prompt), the prompt's
    length and the source budget, and the point's generation length."""
    if source_budget < 1:
        raise ValueError(
            f"no room for a source: {config['n_positions']} positions, {n_prompt} prompt "
            f"tokens, {max_new_tokens} new tokens"
        )
    classes = {"AutoConfig": PROMPTED_CONFIG_CLASS, "AutoModelForCausalLM": PROMPTED_MODEL_CLASS}
    config = {
        **config,
        "architectures": [PROMPTED_MODEL_CLASS],
        "model_type": PROMPTED_MODEL_TYPE,
        "auto_map": {auto: f"{MODELING_MODULE}.{cls}" for auto, cls in classes.items()},
        "soft_prompt_tokens": n_prompt,
        "source_budget": source_budget,
    }
    return config, {**generation, "max_new_tokens": max_new_tokens}


def hf_state_dict(cfg: GPTConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our parameter names and layouts -> `GPT2LMHeadModel`'s (the tied output layer is stored
    once, as `transformer.wte.weight`). Every weight of ours must be used exactly once."""
    left = dict(weights)

    def take(name: str) -> torch.Tensor:
        if name not in left:
            raise KeyError(f"checkpoint lacks {name!r} (is it a MediSwift GPT checkpoint?)")
        return left.pop(name)

    def bias(name: str, size: int, like: torch.Tensor) -> torch.Tensor:
        return take(name) if cfg.bias else like.new_zeros(size)

    def conv1d(name: str) -> torch.Tensor:
        return take(f"{name}.weight").t()  # nn.Linear (out, in) -> Conv1D (in, out)

    C = cfg.d_model
    out = {
        "transformer.wte.weight": take("wte.weight"),
        "transformer.wpe.weight": take("wpe.weight"),
    }
    for i in range(cfg.n_layer):
        ours, hf = f"h.{i}", f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            w = take(f"{ours}.{ln}.weight")
            out[f"{hf}.{ln}.weight"] = w
            out[f"{hf}.{ln}.bias"] = bias(f"{ours}.{ln}.bias", C, w)
        qkv = [take(f"{ours}.attn.{p}.weight") for p in ("q", "k", "v")]
        out[f"{hf}.attn.c_attn.weight"] = torch.cat(qkv, dim=0).t()  # (C, 3C): q | k | v
        out[f"{hf}.attn.c_attn.bias"] = (
            torch.cat([take(f"{ours}.attn.{p}.bias") for p in ("q", "k", "v")])
            if cfg.bias
            else qkv[0].new_zeros(3 * C)
        )
        for theirs, mine, size in (
            ("attn.c_proj", "attn.o", C),
            ("mlp.c_fc", "mlp.fc", cfg.d_ff),
            ("mlp.c_proj", "mlp.proj", C),
        ):
            w = conv1d(f"{ours}.{mine}")
            out[f"{hf}.{theirs}.weight"] = w
            out[f"{hf}.{theirs}.bias"] = bias(f"{ours}.{mine}.bias", size, w)
    w = take("ln_f.weight")
    out["transformer.ln_f.weight"] = w
    out["transformer.ln_f.bias"] = bias("ln_f.bias", C, w)
    if left:
        raise ValueError(f"checkpoint weights with no GPT-2 counterpart: {sorted(left)}")
    return {k: v.contiguous() for k, v in out.items()}


def _dtype_name(weights: dict[str, torch.Tensor]) -> str:
    return str(next(iter(weights.values())).dtype).removeprefix("torch.")


# --- Sparsity --------------------------------------------------------------------------------


def sparsity_stats(
    cfg: GPTConfig, weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Parameter counts and sparsity, measured on the weights being exported.

    `mask_sparsity` is the masks' share of inactive weights (None without masks: a dense model,
    or a fine-tuned point, whose masks were dropped); `zero_fraction` is the share of the six
    block matrices that is exactly zero in these weights, whatever the masks say.
    """
    matrices = [f"h.{i}.{m}" for i in range(cfg.n_layer) for m in BLOCK_MATRICES]
    n_matrix = sum(weights[n].numel() for n in matrices)
    zeros = sum(int((weights[n] == 0).sum()) for n in matrices)
    total = sum(t.numel() for t in weights.values())
    embedding = weights["wte.weight"].numel() + weights["wpe.weight"].numel()
    masked = sum(m.numel() for m in masks.values())
    inactive = sum(int((~m).sum()) for m in masks.values())
    return {
        "params": total,
        "non_embedding_params": total - embedding,
        "nonzero_non_embedding_params": total - embedding - zeros,
        "matrix_params": n_matrix,
        "zero_fraction": zeros / n_matrix if n_matrix else 0.0,
        "mask_sparsity": inactive / masked if masked else None,
    }


# --- Tokenizer and soft prompt ---------------------------------------------------------------


def write_tokenizer(tokenizer_dir: Path, out: Path, block_size: int) -> None:
    """The sentencepiece model, the tokenizer class (copied verbatim) and the config files that
    point `AutoTokenizer` at it."""
    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    ours = json.loads((tokenizer_dir / TOKENIZER_CONFIG).read_text())
    shutil.copyfile(tokenizer_dir / BPE_MODEL, out / BPE_MODEL)
    shutil.copyfile(TOKENIZER_SOURCE, out / f"{TOKENIZER_MODULE}.py")
    moses = ours["moses"]
    specials = {f"{role}_token": piece for role, piece in SPECIAL_PIECES.items()}
    _write_json(
        out / HF_TOKENIZER_CONFIG,
        {
            "tokenizer_class": TOKENIZER_CLASS,
            "auto_map": {"AutoTokenizer": [f"{TOKENIZER_MODULE}.{TOKENIZER_CLASS}", None]},
            **specials,
            "model_max_length": block_size,
            "moses_lang": moses["lang"],
            "aggressive_dash_splits": moses["aggressive_dash_splits"],
            "escape": moses["escape"],
            "split_special_tokens": True,
            "clean_up_tokenization_spaces": False,
            "mediswift_tokenizer_hash": ours["hash"],
        },
    )
    _write_json(out / HF_SPECIAL_TOKENS_FILE, specials)


def copy_prompt(prompt: Path, out: Path, d_model: int) -> int:
    """Copy a point's soft prompt (`weight`: (n_tokens, d_model)) as `soft_prompt.safetensors`
    after checking it fits the model; returns its number of virtual tokens."""
    tensors = load_file(str(prompt))
    weight = tensors.get("weight")
    if weight is None or weight.dim() != 2 or weight.shape[1] != d_model:
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(
            f"{prompt}: expected a soft prompt 'weight' of shape (n_tokens, {d_model}), got {shape}"
        )
    shutil.copyfile(prompt, Path(out) / SOFT_PROMPT_FILE)
    return int(weight.shape[0])


# --- Files -----------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _is_export(path: Path) -> bool:
    cfg = path / HF_CONFIG_FILE
    try:
        return "mediswift" in json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but an earlier export (or an empty folder)."""
    occupied = out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir()))
    if occupied and not _is_export(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not an earlier export: not replacing it")


# Files only some exports write (a fine-tuned point's): an earlier export may hold them.
OPTIONAL_FILES = frozenset({SOFT_PROMPT_FILE, f"{MODELING_MODULE}.py"})


def _check_only_exported_files(out_dir: Path, new: Path) -> None:
    """Refuse to replace an earlier export that holds files no export writes (the user's own
    notes, results): replacing the directory would delete them."""
    if not out_dir.is_dir():
        return
    ours = {p.relative_to(new) for p in new.rglob("*")} | {Path(n) for n in OPTIONAL_FILES}
    theirs = sorted(
        str(rel)
        for p in out_dir.rglob("*")
        if (rel := p.relative_to(out_dir)) not in ours and "__pycache__" not in rel.parts
    )
    if theirs:
        shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise FileExistsError(
            f"{out_dir} holds files an export does not write ({shown}): not replacing it; "
            "move them or choose another --out"
        )


def _replace(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
