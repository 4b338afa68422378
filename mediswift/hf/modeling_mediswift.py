"""A fine-tuned MediSwift point for `transformers`: GPT-2 that reads its soft prompt after the
source, as the point was fine-tuned and evaluated.

This file is copied into the export of every fine-tuned point and loaded by
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. It is self-contained on
purpose: it needs `transformers` and `torch`, never the `mediswift` package.

A point was trained on sequences `[source; prompt; target]`: the source's token embeddings, the
n learned prompt embeddings (`soft_prompt`, saved with the weights), then the target, with
learned positions running on through the prompt. `generate(input_ids)` predicts as the
pipeline's evaluation does: each row's source (its unpadded ids) is cut to `source_budget`
tokens (an empty one becomes `</s>`), the prompt is put after it, and the continuation is
greedy up to `</s>` or `max_new_tokens` (the point's, from `generation_config.json`), never past
the context. Rows are decoded one at a time: GPT-2's learned positions count from the first
embedding, so a row needs no padding in front of it. The result is `[input_ids; new ids]` per
row, right-padded, as any decoder's `generate` returns, so the text-generation pipeline (and
MLflow's transformers flavour) cut the input off as usual.

`forward` is GPT-2's own. To score a continuation with the prompt, pass
`inputs_embeds=model.prompted_embeds(source_ids)` followed by the continuation's embeddings.

The model type is not GPT-2's, so that loading without `trust_remote_code=True` fails instead
of silently giving a model without its prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

# Generation length when neither the caller nor generation_config.json give one.
DEFAULT_MAX_NEW_TOKENS = 16


class MediSwiftPromptedConfig(GPT2Config):
    """GPT-2's configuration, plus `soft_prompt_tokens` (n) and `source_budget` (the source
    tokens kept, None: all that fit)."""

    model_type = "mediswift_prompted"

    def __init__(self, soft_prompt_tokens: int = 1, source_budget: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.soft_prompt_tokens = soft_prompt_tokens
        self.source_budget = source_budget


class MediSwiftPromptedLM(GPT2LMHeadModel):
    """`GPT2LMHeadModel` carrying a fine-tuned point's soft prompt (`soft_prompt`, (n, d))."""

    config_class = MediSwiftPromptedConfig

    def __init__(self, config: MediSwiftPromptedConfig):
        super().__init__(config)
        self.soft_prompt = nn.Parameter(torch.zeros(config.soft_prompt_tokens, config.n_embd))

    def prompted_embeds(self, source_ids: torch.Tensor) -> torch.Tensor:
        """source_ids (B, S) -> the embeddings of [source; prompt] (B, S + n, d)."""
        tokens = self.get_input_embeddings()(source_ids)
        prompt = self.soft_prompt.to(tokens.dtype).expand(source_ids.shape[0], -1, -1)
        return torch.cat([tokens, prompt], dim=1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Each row's source with the prompt after it, continued greedily (see the module)."""
        if input_ids is None or kwargs.get("inputs_embeds") is not None:
            # Embeddings made by the caller (e.g. with `prompted_embeds`): GPT-2's generate.
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if kwargs.get("return_dict_in_generate"):
            raise ValueError("return_dict_in_generate is not supported with the soft prompt")
        settings = kwargs.get("generation_config") or self.generation_config
        max_new = (
            kwargs.pop("max_new_tokens", None) or settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        )
        rows = []
        for b in range(input_ids.shape[0]):
            real = input_ids[b] if attention_mask is None else input_ids[b][attention_mask[b] > 0]
            rows.append(torch.cat([input_ids[b], self._continue(real, max_new, kwargs)]))
        pad = settings.pad_token_id if settings.pad_token_id is not None else 0
        return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)

    def _continue(self, source: torch.Tensor, max_new: int, kwargs: dict[str, Any]) -> torch.Tensor:
        """The new ids after one row's [source; prompt] (its `</s>` included, if generated)."""
        budget = self.config.source_budget
        source = source[:budget] if budget is not None else source
        if source.numel() == 0:  # an empty source still needs one position
            source = source.new_full((1,), self.config.eos_token_id)
        embeds = self.prompted_embeds(source[None])  # (1, L, d)
        room = self.config.n_positions - embeds.shape[1]
        if min(max_new, room) <= 0:
            return source.new_empty(0)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        new = super().generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=min(max_new, room), **kwargs
        )
        return new[0]  # from embeddings alone, generate returns only the new tokens
