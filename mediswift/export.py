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

A sparse checkpoint is exported as it is: its masked weights are exact zeros, stored densely
(transformers has no sparse GPT-2), and the card records the sparsity. A fine-tuned point's soft
prompt is copied beside the model, and the card shows how to feed it through `inputs_embeds`.

Nothing here needs `transformers`: the files are written from their documented layout, so an
export can be made on a machine without it (the tests load every export with transformers).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mediswift.model.gpt import BLOCK_MATRICES, GPTConfig
from mediswift.text.tokenizer import CONFIG_FILE as TOKENIZER_CONFIG
from mediswift.text.tokenizer import MODEL_FILE as BPE_MODEL
from mediswift.text.tokenizer import Tokenizer
from mediswift.train.checkpoint import MODEL_FILE, load_masks, read_config

HF_CONFIG_FILE = "config.json"
HF_GENERATION_FILE = "generation_config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_SPECIAL_TOKENS_FILE = "special_tokens_map.json"
TOKENIZER_MODULE = "tokenization_mediswift"
TOKENIZER_CLASS = "MediSwiftTokenizer"
TOKENIZER_SOURCE = Path(__file__).parent / "hf" / f"{TOKENIZER_MODULE}.py"
SOFT_PROMPT_FILE = "soft_prompt.safetensors"
CARD_FILE = "README.md"
EXPORT_FORMAT = 1
# NLM's terms for its downloadable data (PubMed): what the card's licence metadata points to.
NLM_TERMS = "https://www.nlm.nih.gov/databases/download/terms_and_conditions.html"

# The special pieces of our sentencepiece models (`mediswift.text.bpe`), by role.
SPECIAL_PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}

# Keys of `card` that the card uses; any other key is listed under "Other details". Paths are
# never printed (`checkpoint`, `loss_curve` of a variant record): they mean nothing elsewhere.
CARD_FIELDS: dict[str, str] = {
    "name": "model name, e.g. the variant name 'tiny-s0.75' (default: the output folder's name)",
    "model": "size name (tiny, small, med, large, xl)",
    "sparsity": "pre-training sparsity (fraction of zero weights in the six block matrices)",
    "train_flops": "pre-training FLOPs",
    "tokens": "pre-training tokens",
    "active_params": "parameters active during pre-training",
    "active_non_embedding_params": "non-embedding parameters active during pre-training",
    "mlflow_run_id": "the MLflow run that trained it",
    "recipe": "the pipeline recipe it came from",
    "code_version": "the code version (git commit) that trained it",
    "data": "list of lines describing the pre-training data (replaces the default description)",
    "pmc_commercial_only": "whether PMC articles were restricted to commercial-use licences",
    "task": "fine-tuning task (a fine-tuned point)",
    "point": "fine-tuning settings of the point (batch_size, lr, seed, ...)",
    "metrics": "evaluation metrics, name -> value (nested dicts are flattened)",
    "source_format": "how a task source is written before tokenization (fine-tuned points)",
}
_CARD_HIDDEN = {"checkpoint", "loss_curve"}

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
) -> Path:
    """Write checkpoint `checkpoint_dir` (our layout, dense or sparse) with the tokenizer in
    `tokenizer_dir` (the vocab stage's output) as a Hugging Face model directory `out_dir`.

    `card`: what the caller knows about the model (`CARD_FIELDS`; a pre-train variant record and
    metrics), rendered into the model card. `prompt`: a fine-tuned point's `prompt.safetensors`,
    exported as `soft_prompt.safetensors`. The directory is built beside `out_dir` and renamed
    into place, so `out_dir` is either a complete export or absent; an existing `out_dir` is
    replaced only if it is an earlier export. Returns `out_dir`.
    """
    checkpoint_dir, tokenizer_dir, out_dir = (
        Path(checkpoint_dir),
        Path(tokenizer_dir),
        Path(out_dir),
    )
    card = dict(card or {})
    cfg = read_config(checkpoint_dir)
    unknown = set(cfg.to_dict()) - SUPPORTED_CONFIG
    if unknown:
        raise ValueError(
            f"{checkpoint_dir}: model setting(s) {sorted(unknown)} have no GPT-2 mapping in "
            "mediswift.export yet; exporting would not reproduce the model"
        )
    weights = load_file(str(checkpoint_dir / MODEL_FILE))
    tok = Tokenizer.load(tokenizer_dir)  # checks that bpe.model matches tokenizer.json
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(
            f"{checkpoint_dir}: the model's vocabulary ({cfg.vocab_size}) is smaller than the "
            f"tokenizer's ({tok.vocab_size}): they do not belong together"
        )
    _check_replaceable(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_json(tmp / HF_CONFIG_FILE, hf_config(cfg, tok.special_ids, _dtype_name(weights)))
        _write_json(tmp / HF_GENERATION_FILE, generation_config(tok.special_ids))
        save_file(
            hf_state_dict(cfg, weights), str(tmp / HF_WEIGHTS_FILE), metadata={"format": "pt"}
        )
        write_tokenizer(tokenizer_dir, tmp, cfg.block_size)
        n_prompt = copy_prompt(Path(prompt), tmp, cfg.d_model) if prompt is not None else 0
        stats = sparsity_stats(cfg, weights, load_masks(checkpoint_dir))
        name = str(card.get("name") or out_dir.name)
        text = model_card(name, cfg, tok, stats, card, n_prompt)
        (tmp / CARD_FILE).write_text(text, encoding="utf-8")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# --- Model -----------------------------------------------------------------------------------


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


# --- Model card ------------------------------------------------------------------------------


def model_card(
    name: str,
    cfg: GPTConfig,
    tok: Tokenizer,
    stats: dict[str, Any],
    card: dict[str, Any],
    n_prompt: int = 0,
) -> str:
    """The export's `README.md`: Hub metadata, then what the model is, how it was trained, how
    to use it, and what the data allows."""
    task = card.get("task")
    parts = [
        _front_matter(task),
        f"# {name}\n\n{_summary(cfg, stats, card, n_prompt)}",
        _model_section(cfg, tok, stats, card, n_prompt),
        _sparsity_section(stats, card),
        _data_section(card),
        _metrics_section(card),
        _usage_section(),
    ]
    if n_prompt:
        parts.append(_prompt_section(n_prompt, card))
    parts += [_intended_use_section(), _limitations_section(cfg), _licence_section(card)]
    other = _other_details(card)
    if other:
        parts.append(other)
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def _front_matter(task: str | None) -> str:
    tags = ["biomedical", "pubmed", "gpt2", "sparse", "mediswift"]
    if task:
        tags.append(str(task))
    lines = [
        "---",
        "language: en",
        "license: other",
        "license_name: pubmed-and-pmc-data-terms",
        f"license_link: {NLM_TERMS}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        *(f"- {t}" for t in tags),
        "---",
    ]
    return "\n".join(lines)


def _pretrain_sparsity(stats: dict[str, Any], card: dict[str, Any]) -> float | None:
    """The pre-training sparsity: the caller's record first, then the checkpoint's masks."""
    if card.get("sparsity") is not None:
        return float(card["sparsity"])
    return stats["mask_sparsity"]


def _summary(cfg: GPTConfig, stats: dict[str, Any], card: dict[str, Any], n_prompt: int) -> str:
    sparsity = _pretrain_sparsity(stats, card)
    how = (
        f"with {sparsity:.0%} static unstructured weight sparsity"
        if sparsity
        else "densely (no weight sparsity)"
    )
    text = (
        f"A GPT-3-style decoder ({cfg.n_layer} layers, d_model {cfg.d_model}, "
        f"{stats['params']:,} parameters) pre-trained from scratch on biomedical text (PubMed "
        f"abstracts and PubMed Central full texts) {how}, following *MediSwift: Efficient Sparse "
        "Pre-trained Biomedical Language Models*. It is stored in the Hugging Face GPT-2 "
        "architecture (`GPT2LMHeadModel`) and loads with `AutoModelForCausalLM`."
    )
    if card.get("task"):
        text += (
            f"\n\nThis export is a fine-tuned point: the pre-trained model was fine-tuned densely "
            f"on **{card['task']}**"
            + (f" together with a soft prompt of {n_prompt} virtual tokens" if n_prompt else "")
            + "."
        )
    return text


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None and v != ""]
    return "\n".join(lines)


def _model_section(
    cfg: GPTConfig, tok: Tokenizer, stats: dict[str, Any], card: dict[str, Any], n_prompt: int
) -> str:
    flops = card.get("train_flops")
    tokens = card.get("tokens")
    rows = [
        ("size", card.get("model")),
        ("architecture", "GPT-2: pre-LayerNorm, learned positions, exact GELU, tied embeddings"),
        ("layers / d_model / heads", f"{cfg.n_layer} / {cfg.d_model} / {cfg.n_head}"),
        ("context", f"{cfg.block_size} tokens"),
        ("vocabulary", f"{cfg.vocab_size:,} (Moses + sentencepiece BPE, tokenizer {tok.hash})"),
        ("parameters", f"{stats['params']:,} (non-embedding {stats['non_embedding_params']:,})"),
        ("non-zero non-embedding parameters", f"{stats['nonzero_non_embedding_params']:,}"),
        ("active parameters in pre-training", _int(card, "active_params")),
        (
            "active non-embedding parameters in pre-training",
            _int(card, "active_non_embedding_params"),
        ),
        ("pre-training tokens", f"{float(tokens):.4g}" if tokens is not None else None),
        ("pre-training FLOPs", f"{float(flops):.4g}" if flops is not None else None),
        ("soft prompt", f"{n_prompt} virtual tokens (`{SOFT_PROMPT_FILE}`)" if n_prompt else None),
        ("recipe", card.get("recipe")),
        ("code version", card.get("code_version")),
        ("MLflow run", card.get("mlflow_run_id")),
    ]
    return "## Model\n\n" + _table(rows)


def _int(card: dict[str, Any], key: str) -> str | None:
    return f"{int(card[key]):,}" if card.get(key) is not None else None


def _sparsity_section(stats: dict[str, Any], card: dict[str, Any]) -> str:
    sparsity = _pretrain_sparsity(stats, card)
    zero = stats["zero_fraction"]
    lines = ["## Sparsity", ""]
    if sparsity:
        lines.append(
            f"Pre-training sparsity: **{sparsity:.1%}** of the weights of the six matrices of "
            "every block (attention q, k, v, output; MLP fc, proj) were held at zero by static "
            "random masks; embeddings, LayerNorms and biases were dense."
        )
    else:
        lines.append("Pre-training sparsity: **0%** (a dense model).")
    lines += [
        "",
        f"Zero weights in those matrices, measured in the exported weights: **{zero:.1%}** "
        f"({stats['matrix_params']:,} weights). The weights are stored as dense tensors (the "
        "zeros included), so the file is as large as a dense model's and transformers computes "
        "densely; the zeros can be exploited by sparse kernels or compression.",
    ]
    if card.get("task") and sparsity:
        lines += [
            "",
            "Fine-tuning was dense: the masks were dropped and the masked weights, starting at "
            "zero, trained like the others; the zeros measured above are what it left.",
        ]
    return "\n".join(lines)


DEFAULT_DATA = [
    "PubMed abstracts: the annual baseline and daily update files of NLM's PubMed "
    "(title-only records dropped, later versions and deletions applied, duplicates removed).",
    "PubMed Central full texts: articles of the PMC Open Access subset.",
    "3% of documents (by a salted hash of the document id) held out for validation.",
    "Text is tokenized with Moses (`-l en -a`, no escaping) and a sentencepiece BPE vocabulary "
    "learned on the training split.",
]


def _data_section(card: dict[str, Any]) -> str:
    data = card.get("data") or DEFAULT_DATA
    if isinstance(data, str):
        data = [data]
    lines = ["## Training data", "", *(f"- {d}" for d in data)]
    if card.get("pmc_commercial_only") is not None:
        kept = (
            "only articles whose licence allows commercial use were kept"
            if card["pmc_commercial_only"]
            else "articles under every Open Access licence were kept, non-commercial ones included"
        )
        lines.append(f"- PMC licence filter: {kept}.")
    if card.get("task"):
        lines.append(f"- Fine-tuning: the training split of {card['task']}.")
    return "\n".join(lines)


def _flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def _metrics_section(card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    if not metrics:
        return "## Evaluation\n\nNo evaluation metrics were recorded for this export."
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in _flatten(dict(metrics))]
    lines = ["## Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


USAGE = """## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = "."  # the folder of this README
tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
ids = tok("Aspirin reduces the risk of", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=20, do_sample=False)
print(tok.decode(out[0, ids.shape[1]:]))
```

The tokenizer is a small Python class shipped in this directory (`tokenization_mediswift.py`:
Moses pre-tokenization with sacremoses, then the sentencepiece BPE model `bpe.model`), hence
`trust_remote_code=True`; it needs `pip install sentencepiece sacremoses`. It gives exactly the
ids the model was trained on; no BOS or EOS is added to a text."""


def _usage_section() -> str:
    return USAGE


PROMPT_USAGE = """```python
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = "."  # the folder of this README
source = "question: Is aspirin associated with a lower risk of colorectal cancer? context: ..."
tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
prompt = load_file(f"{model_dir}/soft_prompt.safetensors")["weight"]  # (n_prompt, d_model)

source_ids = torch.tensor([tok(source)["input_ids"]])  # (1, S)
wte = model.get_input_embeddings()
with torch.no_grad():
    embeds = torch.cat([wte(source_ids), prompt[None].to(wte.weight.dtype)], dim=1)
    logits = model(inputs_embeds=embeds).logits  # (1, S + n_prompt, V); last row: 1st answer token
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    new_ids = model.generate(
        inputs_embeds=embeds, attention_mask=mask, max_new_tokens=16, do_sample=False
    )  # only the generated tokens
answer = tok.decode(new_ids[0])
```"""


def _prompt_section(n_prompt: int, card: dict[str, Any]) -> str:
    fmt = card.get("source_format")
    lines = [
        "## Soft prompt",
        "",
        f"`{SOFT_PROMPT_FILE}` holds the {n_prompt} virtual tokens learned in fine-tuning "
        "(tensor `weight`, shape (n_prompt, d_model)). The model was trained on sequences "
        "`[source; prompt; target]`: the source's token embeddings, then the prompt's rows in "
        "place of token embeddings, then the target. Learned positions run on through the "
        "prompt (the prompt's first row is at position len(source)), which is what GPT-2 does "
        "with `inputs_embeds`. To answer, feed `[source; prompt]` and continue from there:",
        "",
        PROMPT_USAGE,
        "",
        "To score a candidate answer, append its token embeddings (`wte(answer_ids)`) after the "
        "prompt and read the log-probabilities of its tokens from the logits one position "
        "earlier. Generation stops at `</s>`. The source plus prompt plus answer must fit in "
        "the context (sources were cut at the end to fit in fine-tuning).",
    ]
    if fmt:
        lines += ["", f"Sources were written as `{fmt}` before tokenization."]
    return "\n".join(lines)


def _intended_use_section() -> str:
    return """## Intended use

Research on biomedical language modelling and on sparse pre-training: measuring what
pre-training sparsity costs or saves, fine-tuning on biomedical tasks (question answering,
document classification), and comparing against other models of the same data and size. It is
not a medical device and must not be used for diagnosis, treatment or any decision about a
patient, nor as a source of medical facts."""


def _limitations_section(cfg: GPTConfig) -> str:
    return f"""## Limitations

- It generates fluent text with no guarantee of truth: claims, numbers, drug names and
  citations it writes can be invented. Small sizes (as in the demo recipe) produce mostly
  plausible-looking noise.
- English biomedical literature only; it inherits that literature's biases (populations,
  diseases and languages studied, publication bias) and its era (nothing after the data's date).
- The context is {cfg.block_size} tokens; positions beyond it do not exist.
- Sparse weights are stored densely: no memory or speed gain in transformers as is.
- The tokenizer runs Moses in Python (sacremoses): slower than a Rust tokenizer, and there is no
  "fast" tokenizer. Detokenized text follows Moses' conventions."""


def _licence_section(card: dict[str, Any]) -> str:
    pmc = {
        True: "This model was trained only on articles whose licence allows commercial use "
        "(`download.pmc_commercial_only: true`).",
        False: "Articles under non-commercial licences (CC BY-NC and similar) were included; "
        "`download.pmc_commercial_only: true` trains on commercial-use licences only.",
        None: "Whether non-commercial licences were included is not recorded here: the "
        "pipeline includes them unless `download.pmc_commercial_only: true` is set.",
    }[None if card.get("pmc_commercial_only") is None else bool(card["pmc_commercial_only"])]
    return f"""## Licence of the data

The weights are derived from the training data; there is no separate licence for them beyond
the data's terms (Hub metadata: `license: other`).

- **PubMed abstracts** are distributed by the U.S. National Library of Medicine under NLM's
  terms and conditions for downloading its data
  ({NLM_TERMS}). NLM does not own the
  abstracts: some are copyrighted by their publishers or authors.
- **PubMed Central Open Access subset**: each article carries its own licence (CC0, CC BY,
  CC BY-SA, CC BY-ND, CC BY-NC and variants, or other), recorded per article in the download
  manifest. {pmc}
- **Fine-tuning datasets** (PubMedQA, HoC and others) come with their own licences: check them
  before redistributing a fine-tuned model."""


def _other_details(card: dict[str, Any]) -> str:
    rows = [
        (k, v)
        for k, v in card.items()
        if k not in CARD_FIELDS and k not in _CARD_HIDDEN and not isinstance(v, dict | list)
    ]
    if isinstance(card.get("point"), dict):
        rows = [(f"fine-tuning {k}", v) for k, v in card["point"].items()] + rows
    return "## Other details\n\n" + _table(rows) if rows else ""


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


def _replace(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
