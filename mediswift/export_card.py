"""The model card (`README.md`) of an export: Hub metadata, then what the model is, how it was
trained, how to use it, and what the data allows. The fixed prose lives in
`mediswift/hf/model_card.md` (one section per marker); the tables around it are written here
from what the export measured and what the caller knows (`CARD_FIELDS`)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from mediswift.model.gpt import GPTConfig
from mediswift.model.sizes import SIZES
from mediswift.text.tokenizer import Tokenizer

PROSE_FILE = Path(__file__).parent / "hf" / "model_card.md"
SOFT_PROMPT_FILE = "soft_prompt.safetensors"
# NLM's terms for its downloadable data (PubMed): what the card's licence metadata points to.
NLM_TERMS = "https://www.nlm.nih.gov/databases/download/terms_and_conditions.html"

# Keys of `card` that the card uses; any other key is listed under "Other details". Paths are
# never printed (`checkpoint`, `loss_curve` of a variant record): they mean nothing elsewhere.
CARD_FIELDS: dict[str, str] = {
    "name": "model name, e.g. 'mediswift-tiny-s75' (default: the output folder's name)",
    "model": f"size name ({', '.join(SIZES)})",
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


@cache
def _sections() -> dict[str, str]:
    parts = re.split(r"^<!-- section: (\w+) -->\n", PROSE_FILE.read_text(), flags=re.M)
    return {name: text.strip("\n") for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def prose(name: str, **fields: Any) -> str:
    """A fixed section of the card, its `${field}`s filled in."""
    return Template(_sections()[name]).substitute(fields)


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
        _usage_section(n_prompt),
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


def _usage_section(n_prompt: int) -> str:
    # A fine-tuned point's model class is code shipped in the export, like the tokenizer.
    return prose("usage", model_trust=", trust_remote_code=True" if n_prompt else "")


def _prompt_section(n_prompt: int, card: dict[str, Any]) -> str:
    fmt = card.get("source_format")
    lines = [
        "## Soft prompt",
        "",
        f"The model was fine-tuned with a soft prompt of {n_prompt} virtual tokens, on "
        "sequences `[source; prompt; target]`: the source's token embeddings, then the "
        "prompt's rows in place of token embeddings, then the target, with learned positions "
        "running on through the prompt. The prompt is part of the model: its class, "
        "`MediSwiftPromptedLM` (`modeling_mediswift.py`, shipped here, hence "
        "`trust_remote_code=True`; without it loading fails rather than losing the prompt), "
        "keeps it among its weights, and its `generate` answers as the model was evaluated: "
        "the source cut to its first `source_budget` tokens (`config.json`), the prompt after "
        "it, greedy decoding up to `</s>` or `max_new_tokens` (`generation_config.json`). It "
        "returns `[source; answer]`, as any `generate`, so the text-generation pipeline works "
        "as usual:",
        "",
        prose("prompt_usage"),
        "",
        "To score a candidate answer, append its token embeddings (`wte(answer_ids)`) after "
        "`model.prompted_embeds(source_ids)` and read the log-probabilities of its tokens from "
        "the logits one position earlier; the source plus prompt plus answer must fit in the "
        f"context. `{SOFT_PROMPT_FILE}` holds the same prompt (tensor `weight`, shape "
        "(n_prompt, d_model)) for code that feeds it through `inputs_embeds` itself.",
    ]
    if fmt:
        lines += ["", f"Sources were written as `{fmt}` before tokenization."]
    return "\n".join(lines)


def _intended_use_section() -> str:
    return prose("intended_use")


def _limitations_section(cfg: GPTConfig) -> str:
    return prose("limitations", block_size=cfg.block_size)


def _licence_section(card: dict[str, Any]) -> str:
    pmc = {
        True: "This model was trained only on articles whose licence allows commercial use "
        "(`download.pmc_commercial_only: true`).",
        False: "Articles under non-commercial licences (CC BY-NC and similar) were included; "
        "`download.pmc_commercial_only: true` trains on commercial-use licences only.",
        None: "Whether non-commercial licences were included is not recorded here: the "
        "pipeline includes them unless `download.pmc_commercial_only: true` is set.",
    }[None if card.get("pmc_commercial_only") is None else bool(card["pmc_commercial_only"])]
    return prose("licence", nlm_terms=NLM_TERMS, pmc=pmc)


def _other_details(card: dict[str, Any]) -> str:
    rows = [
        (k, v)
        for k, v in card.items()
        if k not in CARD_FIELDS and k not in _CARD_HIDDEN and not isinstance(v, dict | list)
    ]
    if isinstance(card.get("point"), dict):
        rows = [(f"fine-tuning {k}", v) for k, v in card["point"].items()] + rows
    return "## Other details\n\n" + _table(rows) if rows else ""
