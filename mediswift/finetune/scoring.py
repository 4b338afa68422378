"""Sequences, loss masks and the two ways of predicting a label.

Layout of every sequence (the paper's Eq. 3): `[source; prompt; target; eos]`, right-padded.
Position t predicts token t + 1, so the loss sits on the positions *before* each target token.
With `loss_on="target"` only target tokens and eos are predicted; with `"sequence"` the source
tokens are too (BioGPT's choice). Prompt positions are never predicted: they have no token.

Sources are cut to a fixed budget per task (`source_budget`): the context length minus the prompt
minus the longest target the task can produce (PubMedQA: its three answers; HoC: the longest
training target, since a list of all 10 hallmarks never occurs) and eos, so the prompt and the
target are never truncated and generation has room for that many tokens. A scored candidate
that would not fit the context gets log-likelihood -inf.

Predictions:
- `generate`: greedy decoding after `[source; prompt]` until eos, the label parsed from the
  sentence (BioGPT's way). Rows of different lengths decode together in one right-padded buffer:
  causal attention means the padding after a row's end never influences it.
- `score` (constrained): the task's candidate grammar walked greedily, each step choosing the
  candidate continuation with the highest summed log-likelihood (complete candidates include the
  eos). PubMedQA is one step over its three answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from mediswift.finetune.formats import Example, Label, TaskFormat
from mediswift.model.soft_prompt import PromptedLM, cached_hidden, empty_cache, select_cache

IGNORE = -100
LossOn = Literal["target", "sequence"]
Mode = Literal["generate", "score"]


class TokenizerLike(Protocol):
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class Encoded:
    """An example as token ids: the (truncated) source and the target followed by eos."""

    id: str
    source: list[int]
    target: list[int]
    label: Label


def max_target_tokens(tok: TokenizerLike, targets: Sequence[str]) -> int:
    """Tokens of the longest of `targets`, eos included."""
    return max(len(tok.encode(t)) for t in targets) + 1


def source_budget(
    tok: TokenizerLike, targets: Sequence[str], n_prompt: int, max_len: int, what: str = "task"
) -> int:
    """Source tokens that leave room for the prompt and the longest of `targets` plus eos."""
    need = max_target_tokens(tok, targets)
    budget = max_len - n_prompt - need
    if budget < 1:
        raise ValueError(
            f"context of {max_len} tokens leaves no room for a source after {n_prompt} prompt "
            f"tokens and a {what} target of {need} tokens"
        )
    return budget


def encode_examples(
    tok: TokenizerLike,
    examples: Sequence[Example],
    budget: int,
    token_ids: Sequence[tuple[list[int], list[int]]] | None = None,
) -> list[Encoded]:
    """Token ids of every example, the source cut at the end to `budget` tokens.

    `token_ids` are the (source, target) ids made earlier with this tokenizer (the prepared task
    data keeps them, so grid points do not re-run Moses and BPE over the same texts).
    """
    if token_ids is None:
        token_ids = [(tok.encode(ex.source), tok.encode(ex.target)) for ex in examples]
    if len(token_ids) != len(examples):
        raise ValueError(f"{len(token_ids)} token rows for {len(examples)} examples")
    out = []
    for ex, (src, tgt) in zip(examples, token_ids, strict=True):
        src = list(src[:budget]) or [tok.eos_id]  # an empty source still needs one position
        out.append(Encoded(ex.id, src, list(tgt) + [tok.eos_id], ex.label))
    return out


def build_batch(
    rows: Sequence[tuple[list[int], list[int]]],
    n_prompt: int,
    pad_id: int,
    loss_on: LossOn = "target",
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, continuation) pairs -> idx (B, T), prompt_start (B,), targets (B, T).

    targets[b, t] is the token at t + 1 where that token is in the loss, else IGNORE.
    """
    T = max(len(s) + n_prompt + len(c) for s, c in rows)
    idx = torch.full((len(rows), T), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    starts = torch.empty(len(rows), dtype=torch.long)
    for b, (src, cont) in enumerate(rows):
        s, c = len(src), len(cont)
        idx[b, :s] = torch.tensor(src)
        idx[b, s + n_prompt : s + n_prompt + c] = torch.tensor(cont)
        starts[b] = s
        # The continuation token at s + n + j is predicted from position s + n + j - 1.
        targets[b, s + n_prompt - 1 : s + n_prompt + c - 1] = torch.tensor(cont)
        if loss_on == "sequence":
            targets[b, : s - 1] = torch.tensor(src[1:])
    return idx.to(device), starts.to(device), targets.to(device)


def batch_loss(
    model: PromptedLM, batch: Sequence[Encoded], pad_id: int, loss_on: LossOn
) -> torch.Tensor:
    """Mean cross-entropy over the loss positions of a training batch."""
    device = model.prompt.weight.device
    idx, starts, targets = build_batch(
        [(e.source, e.target) for e in batch], model.n_prompt, pad_id, loss_on, device
    )
    return model.loss(idx, starts, targets)


def _prefill(
    model: PromptedLM, sources: Sequence[list[int]], extra: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """Run every [source; prompt] once into a fresh cache with `extra` free slots per row.

    Returns (cache, lengths (B,), hidden state at each row's last prefix position (B, C)).
    """
    device = model.prompt.weight.device
    n = model.n_prompt
    lengths = torch.tensor([len(s) + n for s in sources], device=device)  # (B,)
    L = int(lengths.max())
    idx = torch.full((len(sources), L), 0, dtype=torch.long, device=device)
    for b, src in enumerate(sources):
        idx[b, : len(src)] = torch.tensor(src, device=device)
    starts = torch.tensor([len(s) for s in sources], device=device)
    x = model.prompt.splice(model.lm.wte(idx), starts)  # (B, L, C)
    cache = empty_cache(model.lm, len(sources), min(L + extra, model.block_size))
    pos = torch.arange(L, device=device).expand(len(sources), L)
    hidden = cached_hidden(model.lm, x, pos, cache)  # (B, L, C)
    last = hidden[torch.arange(len(sources), device=device), lengths - 1]  # (B, C)
    return cache, lengths, last


@torch.no_grad()
def continuation_logprobs(
    model: PromptedLM, sources: Sequence[list[int]], conts: Sequence[Sequence[list[int]]]
) -> list[list[float]]:
    """Summed log-likelihood of each continuation conts[b][j] after [sources[b]; prompt].

    The prefixes run once; every continuation reuses its prefix's cache.
    """
    device = model.prompt.weight.device
    lm = model.lm
    C = max(len(c) for cs in conts for c in cs)
    cache, lengths, last = _prefill(model, sources, C)
    owner = torch.tensor([b for b, cs in enumerate(conts) for _ in cs], device=device)  # (R,)
    flat = [c for cs in conts for c in cs]
    ids = torch.zeros((len(flat), C), dtype=torch.long, device=device)
    keep = torch.zeros((len(flat), C), dtype=torch.bool, device=device)
    for r, c in enumerate(flat):
        ids[r, : len(c)] = torch.tensor(c, device=device)
        keep[r, : len(c)] = True
    pos = (lengths[owner][:, None] + torch.arange(C, device=device)).clamp(
        max=cache[0][0].size(2) - 1
    )  # (R, C): padding slots past a row's end only ever attend to themselves and earlier
    hidden = cached_hidden(lm, lm.wte(ids), pos, select_cache(cache, owner))  # (R, C, d)
    # Token j of a continuation is predicted from the state before it: the prefix's last
    # state for j = 0, the continuation's state j - 1 after that.
    before = torch.cat([last[owner][:, None], hidden[:, :-1]], dim=1)  # (R, C, d)
    logp = F.linear(before[keep], lm.wte.weight).float().log_softmax(-1)  # (N, V)
    lp = logp.gather(1, ids[keep][:, None]).squeeze(1)  # (N,)
    row = torch.arange(len(flat), device=device)[:, None].expand_as(keep)[keep]
    sums = torch.zeros(len(flat), device=device).index_add_(0, row, lp)
    fits = lengths[owner] + keep.sum(1) <= model.block_size
    sums = torch.where(fits, sums, torch.full_like(sums, -math.inf)).tolist()
    out, i = [], 0
    for cs in conts:
        out.append(sums[i : i + len(cs)])
        i += len(cs)
    return out


@torch.no_grad()
def greedy_generate(
    model: PromptedLM, sources: Sequence[list[int]], max_new: int, eos_id: int
) -> list[list[int]]:
    """Greedy continuation of every [source; prompt] up to eos (excluded) or `max_new` tokens."""
    device = model.prompt.weight.device
    lm = model.lm
    cache, lengths, state = _prefill(model, sources, max_new)
    limit = cache[0][0].size(2)
    out: list[list[int]] = [[] for _ in sources]
    active = torch.ones(len(sources), dtype=torch.bool, device=device)
    for _ in range(max_new):
        nxt = F.linear(state, lm.wte.weight).argmax(-1)  # (B,)
        active &= nxt != eos_id
        active &= lengths < limit  # no room left in the context
        if not active.any():
            break
        for b in torch.nonzero(active).flatten().tolist():
            out[b].append(int(nxt[b]))
        pos = lengths.clamp(max=limit - 1)[:, None]  # (B, 1); finished rows write harmlessly
        state = cached_hidden(lm, lm.wte(nxt)[:, None], pos, cache)[:, 0]  # (B, C)
        lengths = lengths + 1
    return out


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def constrained_predict(
    model: PromptedLM,
    task: TaskFormat,
    tok: TokenizerLike,
    data: Sequence[Encoded],
    batch_size: int,
) -> list[Label]:
    """Walk the task's candidate grammar greedily, choosing by summed log-likelihood."""
    cache: dict[tuple[str, bool], list[int]] = {}

    def ids(text: str, complete: bool) -> list[int]:
        if (text, complete) not in cache:
            cache[(text, complete)] = tok.encode(text) + ([tok.eos_id] if complete else [])
        return cache[(text, complete)]

    chosen: list[Label | None] = [None] * len(data)
    final: list[Label | None] = [None] * len(data)
    pending = list(range(len(data)))
    while pending:
        still = []
        for chunk in _chunks(pending, batch_size):
            cands = [task.candidates(chosen[i]) for i in chunk]
            scores = continuation_logprobs(
                model,
                [data[i].source for i in chunk],
                [[ids(c.text, c.complete) for c in cs] for cs in cands],
            )
            for i, cs, sc in zip(chunk, cands, scores, strict=True):
                best = cs[max(range(len(cs)), key=lambda j: sc[j])]
                if best.complete:
                    final[i] = best.label
                else:
                    chosen[i] = best.label
                    still.append(i)
        pending = still
    return final


def predict(
    model: PromptedLM,
    task: TaskFormat,
    tok: TokenizerLike,
    data: Sequence[Encoded],
    mode: Mode,
    batch_size: int,
    max_new: int | None = None,
) -> tuple[list[Label | None], list[str]]:
    """Labels (None where a generation names none) and, for `generate`, the generated text.

    `max_new` bounds generation (default: the longest of the task's own targets)."""
    was_training = model.training
    model.eval()
    try:
        if mode == "score":
            return constrained_predict(model, task, tok, data, batch_size), []
        # Sort by length so batches pad little; restore the order afterwards.
        order = sorted(range(len(data)), key=lambda i: len(data[i].source))
        max_new = max_new or max_target_tokens(tok, task.all_targets())
        texts: list[str] = [""] * len(data)
        for chunk in _chunks(order, batch_size):
            gen = greedy_generate(model, [data[i].source for i in chunk], max_new, tok.eos_id)
            for i, g in zip(chunk, gen, strict=True):
                texts[i] = tok.decode(g)
        return [task.parse(t) for t in texts], texts
    finally:
        model.train(was_training)


def evaluate(
    model: PromptedLM,
    task: TaskFormat,
    tok: TokenizerLike,
    data: Sequence[Encoded],
    mode: Mode,
    batch_size: int,
    max_new: int | None = None,
) -> tuple[float, list[Label | None], list[str]]:
    preds, texts = predict(model, task, tok, data, mode, batch_size, max_new)
    return task.metric(preds, [e.label for e in data]), preds, texts
