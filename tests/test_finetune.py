"""Dense fine-tuning: sequence layout and loss masks, truncation, zero-start of reactivated
weights, cached scoring and generation, a tiny fine-tune that learns, and one grid point end to
end (a stage unit of multi-stage data, unit written once)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mediswift.artifacts import Artifact
from mediswift.config import FinetuneConfig
from mediswift.finetune.datasets import prepare_task
from mediswift.finetune.finetuned import load_finetuned, load_pretrained, reactivate
from mediswift.finetune.formats import read_examples
from mediswift.finetune.hoc import HoC, hoc_splits
from mediswift.finetune.keys import PointSpec, StageSpec
from mediswift.finetune.point import run_point, settings_for
from mediswift.finetune.pubmedqa import PubMedQA, load_json, pqal_splits
from mediswift.finetune.results import StageUnitManifest
from mediswift.finetune.scoring import (
    IGNORE,
    build_batch,
    continuation_logprobs,
    encode_examples,
    evaluate,
    greedy_generate,
    source_budget,
)
from mediswift.finetune.trainer import TrainSettings, fit, make_optimizer
from mediswift.manifests import TrackingSpec
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.model.soft_prompt import PromptedLM
from mediswift.text import moses
from mediswift.text.bpe import learn_bpe
from mediswift.text.tokenizer import Tokenizer, write_tokenizer_config
from mediswift.train.checkpoint import save_checkpoint
from mediswift.train.finite import FORCE_NAN_ENV, NonFiniteLoss


@pytest.fixture(scope="module")
def pqa(mirror_dir: Path) -> dict:
    d = mirror_dir / "pubmedqa"
    return pqal_splits(d / "ori_pqal.json", d / "test_ground_truth.json")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory, pqa: dict, mirror_dir: Path) -> Tokenizer:
    """A small BPE vocabulary learned on task text (targets included, as pre-training would)."""
    d = tmp_path_factory.mktemp("tok")
    hoc = hoc_splits(*(mirror_dir / "hoc" / f"{s}.tsv" for s in ("train", "dev", "test")))
    texts = [e.source + " " + e.target for e in pqa["train"][:150] + hoc["train"][:100]]
    texts += HoC().all_targets() + PubMedQA().all_targets()
    learn_bpe((moses.moses_tokenize(t) for t in texts), d / "bpe.model", 800)
    write_tokenizer_config(d)
    return Tokenizer.load(d)


def tiny_model(vocab: int, n_prompt: int, seed: int = 0, block: int = 128) -> PromptedLM:
    torch.manual_seed(seed)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=vocab, block_size=block))
    model = PromptedLM(lm, n_prompt)
    model.prompt.init_from_vocab(lm.wte, torch.Generator().manual_seed(seed))
    return model


def test_sequence_layout_and_loss_masks() -> None:
    rows = [([5, 6, 7], [8, 9, 3]), ([11], [12, 3])]
    idx, starts, tgt = build_batch(rows, n_prompt=2, pad_id=0, loss_on="target")
    assert idx.tolist() == [[5, 6, 7, 0, 0, 8, 9, 3], [11, 0, 0, 12, 3, 0, 0, 0]]
    assert starts.tolist() == [3, 1]
    I = IGNORE  # noqa: E741
    # Position t predicts t + 1: only target tokens (and eos) are predicted.
    assert tgt.tolist() == [[I, I, I, I, 8, 9, 3, I], [I, I, 12, 3, I, I, I, I]]
    _, _, seq = build_batch(rows, n_prompt=2, pad_id=0, loss_on="sequence")
    # Whole-sequence loss adds the source tokens; prompt slots are never predicted.
    assert seq.tolist() == [[6, 7, I, I, 8, 9, 3, I], [I, I, 12, 3, I, I, I, I]]


def test_loss_ignores_source_and_prompt_positions() -> None:
    model = tiny_model(40, 3)
    rows = [([5, 6, 7, 8], [9, 10, 3])]
    idx, starts, tgt = build_batch(rows, 3, 0, "target")
    logits, loss = model(idx, starts, tgt)
    manual = F.cross_entropy(logits[0, 6:9], torch.tensor([9, 10, 3]))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    # Changing the source changes the loss only through the context, never by being scored:
    # with "sequence" the source tokens are scored too and the loss differs.
    _, _, seq = build_batch(rows, 3, 0, "sequence")
    assert model(idx, starts, seq)[1].item() != pytest.approx(loss.item())


def test_sources_are_truncated_never_prompt_or_target(tok: Tokenizer, pqa: dict) -> None:
    task = PubMedQA()
    budget = source_budget(tok, task.all_targets(), 9, 64)
    enc = encode_examples(tok, pqa["train"][:20], budget)
    for e, ex in zip(enc, pqa["train"][:20], strict=True):
        assert len(e.source) <= budget
        assert e.source == tok.encode(ex.source)[: len(e.source)]  # the start is kept
        assert e.target == tok.encode(ex.target) + [tok.eos_id]  # whole target + eos
        assert len(e.source) + 9 + len(e.target) <= 64
    with pytest.raises(ValueError, match="no room"):
        source_budget(tok, HoC().all_targets(), 9, 30)


def _masked_checkpoint(path: Path, vocab: int, zero_masked: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=vocab, block_size=64))
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(lm.get_parameter(n).shape, generator=g) > 0.5 for n in lm.matrix_names()}
    if zero_masked:
        with torch.no_grad():
            for n, m in masks.items():
                lm.get_parameter(n).mul_(m)
    save_checkpoint(path, lm, masks=masks)
    return masks


def test_reactivated_weights_start_at_zero_and_train(tmp_path: Path) -> None:
    masks = _masked_checkpoint(tmp_path / "ckpt", 40, zero_masked=True)
    model, info = load_pretrained(tmp_path / "ckpt", 2, seed=0)
    assert info["reactivated"] == sum(int((~m).sum()) for m in masks.values())
    name = "h.0.mlp.fc.weight"
    w, m = model.lm.get_parameter(f"{name}"), masks[name]
    assert torch.all(w[~m] == 0)
    assert w.requires_grad
    # One dense step with a fresh optimizer: masked weights get gradient and move.
    opt = make_optimizer(model, train_settings(batch_size=2, lr=1e-2, epochs=1))
    assert not opt.state  # fresh state, nothing carried over from pre-training
    idx, starts, tgt = build_batch([([5, 6, 7], [8, 9, 3]), ([4], [10, 3])], 2, 0, "target")
    model(idx, starts, tgt)[1].backward()
    assert w.grad[~m].abs().sum() > 0
    opt.step()
    assert (w[~m] != 0).sum() > 0.9 * (~m).sum()


def test_reactivate_zeroes_masked_weights_that_are_not_zero(tmp_path: Path) -> None:
    masks = _masked_checkpoint(tmp_path / "ckpt", 40, zero_masked=False)
    model, _ = load_pretrained(tmp_path / "ckpt", 2, seed=0)
    for n, m in masks.items():
        assert torch.all(model.lm.get_parameter(n)[~m] == 0)
    with pytest.raises(ValueError, match="does not have"):
        reactivate(model.lm, {"nope.weight": torch.ones(1, dtype=torch.bool)})


def test_cached_scoring_matches_full_forward(tok: Tokenizer, pqa: dict) -> None:
    task = PubMedQA()
    model = tiny_model(tok.vocab_size, 9).eval()
    enc = encode_examples(tok, pqa["dev"][:3], source_budget(tok, task.all_targets(), 9, 128))
    conts = [tok.encode(t) + [tok.eos_id] for t in task.all_targets()]
    got = continuation_logprobs(model, [e.source for e in enc], [conts] * 3)
    for b, e in enumerate(enc):
        for j, c in enumerate(conts):
            idx, starts, tgt = build_batch([(e.source, c)], 9, tok.pad_id, "target")
            with torch.no_grad():
                lp = model(idx, starts)[0][0].log_softmax(-1)
            keep = tgt[0] != IGNORE
            want = lp[keep].gather(1, tgt[0][keep][:, None]).sum().item()
            assert got[b][j] == pytest.approx(want, abs=1e-3)


def test_greedy_generation_matches_uncached_decoding(tok: Tokenizer, pqa: dict) -> None:
    model = tiny_model(tok.vocab_size, 3).eval()
    enc = encode_examples(tok, pqa["dev"][:3], 40)
    sources = [enc[0].source[:10], enc[1].source[:25], enc[2].source[:17]]
    got = greedy_generate(model, sources, max_new=8, eos_id=tok.eos_id)
    for src, out in zip(sources, got, strict=True):
        seq, want = list(src) + [0, 0, 0], []
        with torch.no_grad():
            for _ in range(8):
                nxt = int(model(torch.tensor([seq]), torch.tensor([len(src)]))[0][0, -1].argmax())
                if nxt == tok.eos_id:
                    break
                want.append(nxt)
                seq.append(nxt)
        assert out == want


def test_tiny_finetune_beats_untrained_start(tok: Tokenizer, pqa: dict) -> None:
    task = PubMedQA()
    model = tiny_model(tok.vocab_size, 9)
    budget = source_budget(tok, task.all_targets(), 9, 96)
    pool = encode_examples(tok, pqa["train"][:200], budget)
    # The toy subset: mostly the answer the untrained model picks least, so that its start is
    # poor whatever the initialisation happens to prefer.
    _, start_preds, _ = evaluate(model, task, tok, pool[:60], "score", 30)
    rare = min(("yes", "no", "maybe"), key=start_preds.count)
    main = [e for e in pool if e.label == rare]
    other = [e for e in pool if e.label != rare]
    train, dev = main[:40] + other[:8], main[40:49] + other[8:11]
    before = evaluate(model, task, tok, dev, "score", 25)[0]
    assert before < 0.5
    logged: list[tuple[int, dict]] = []
    s = train_settings(batch_size=8, lr=3e-3, epochs=3, patience=3, log_every=2)
    res = fit(model, task, tok, train, dev, s, log=lambda m, step: logged.append((step, m)))
    assert res.history[0]["dev_metric"] == pytest.approx(before)
    assert res.best_dev > before + 0.2 and res.best_epoch > 0
    assert res.best_dev == max(h["dev_metric"] for h in res.history[1:])
    losses = [m["train_loss"] for _, m in logged if "train_loss" in m]
    assert losses[-1] < losses[0]
    # The kept state is the best dev one, and generation produces parsed answers.
    model.load_state_dict(res.best_state)
    metric, preds, _ = evaluate(model, task, tok, dev, s.early_stop_on, s.eval_batch_size)
    assert metric == pytest.approx(res.best_dev)
    # A point's final dev pass in the early-stopping mode takes these instead of predicting again.
    assert res.best_predictions == (preds, []) and len(preds) == len(dev)
    acc, preds, texts = evaluate(model, task, tok, dev, "generate", 25)
    assert len(texts) == len(dev) and preds == [task.parse(t) for t in texts]


def test_hoc_constrained_prediction_returns_label_sets(tok: Tokenizer, mirror_dir: Path) -> None:
    task = HoC()
    docs = hoc_splits(*(mirror_dir / "hoc" / f"{s}.tsv" for s in ("train", "dev", "test")))
    model = tiny_model(tok.vocab_size, 1)
    enc = encode_examples(tok, docs["dev"][:6], source_budget(tok, task.all_targets(), 1, 128))
    f1, preds, _ = evaluate(model, task, tok, enc, "score", 4)
    assert all(isinstance(p, tuple) and list(p) == sorted(set(p)) for p in preds)
    assert 0.0 <= f1 <= 1.0


def test_stage_unit_of_multistage_data_and_never_retrained(
    tok: Tokenizer, mirror_dir: Path, tmp_path: Path
) -> None:
    # Tiny fake PQA-A / PQA-U built from PQA-L items. PQA-A in the repository's JSON; PQA-U as
    # its maintainers publish it: unlabelled Parquet (labelled by the reasoning-free labeller
    # chain, see test_pubmedqa_stages.py, which runs the whole schedule).
    from test_pubmedqa import write_hub_parquet

    items = list(load_json(mirror_dir / "pubmedqa" / "ori_pqal.json").items())
    (tmp_path / "ori_pqaa.json").write_text(json.dumps(dict(items[:40])))
    write_hub_parquet(tmp_path / "pqa_unlabeled.parquet", items[40:64], labelled=False)
    section = {
        "epochs": 1,
        "pqa_a_epochs": 1,
        "pqa_u_epochs": 1,
        "max_train_examples": 24,
        "max_eval_examples": 12,
        "pqa_a_train_size": 30,
        "pqa_a_url": str(tmp_path / "ori_pqaa.json"),
        "pqa_u_url": str(tmp_path / "pqa_unlabeled.parquet"),
    }
    cfg = FinetuneConfig(tasks={"pubmedqa": section}, max_len=64, eval_batch_size=12, patience=1)
    files = {
        "ori_pqal": mirror_dir / "pubmedqa" / "ori_pqal.json",
        "test_ground_truth": mirror_dir / "pubmedqa" / "test_ground_truth.json",
        "pqa_a": tmp_path / "ori_pqaa.json",
        "pqa_u": tmp_path / "pqa_unlabeled.parquet",
    }
    assert set(cfg.task("pubmedqa").sources()) == set(files)
    info = prepare_task(cfg.task("pubmedqa"), files, tmp_path / "data", tok)
    assert info["tokenizer"] == tok.hash
    ids = (tmp_path / "data" / "dev.ids.jsonl").read_text().splitlines()
    dev0 = read_examples(tmp_path / "data" / "dev.jsonl")[0]
    assert json.loads(ids[0]) == [tok.encode(dev0.source), tok.encode(dev0.target)]
    assert [s["name"] for s in info["stages"]] == [
        "rf_pqa_a",
        "rf_pqa_l",
        "pqa_a",
        "pqa_u",
        "pqa_l",
    ]
    assert info["counts"]["pqa_a_train"] == 24 and info["counts"]["pqa_a_dev"] == 10
    assert info["full_counts"] == {
        "train": 450,
        "dev": 50,
        "test": 500,
        "pqa_a_train": 30,
        "pqa_a_dev": 10,
        "pqa_u_train": 24,
        "rf_pqa_a_train": 30,
        "rf_pqa_a_dev": 10,
        "rf_train": 450,
        "rf_dev": 50,
        "rf_pqa_u": 24,
    }
    torch.manual_seed(0)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=tok.vocab_size, block_size=64))
    save_checkpoint(tmp_path / "ckpt", lm)
    unit = Artifact("finetune", "k", tmp_path / "unit")
    point = dict(
        checkpoint="ckpt",
        tokenizer=tok.hash,
        data="data",
        task="pubmedqa",
        batch_size=8,
        lr=1e-3,
        seed=0,
        shared_settings=cfg.shared(),
        task_settings=cfg.tasks["pubmedqa"],
        modes=["generate", "score"],
        variant="v",
        data_dir="data",
        tokenizer_dir="unused",
        tracking=TrackingSpec(uri="unused", experiment="unused"),
    )
    # A multi-stage schedule is trained as stage units, never as one grid point.
    with pytest.raises(ValueError, match="stage units"):
        run_point(unit, PointSpec(**point), tmp_path, tok)
    spec = StageSpec(**point, phase="pqa_a")
    m = run_point(unit, spec, tmp_path, tok)
    assert type(m) is StageUnitManifest
    assert [s.name for s in m.stages] == ["pqa_a"] and m.phase == "pqa_a"
    assert m.start == "ckpt" and m.stages[0].train == 24
    # An earlier stage: its best dev metric (early-stopping mode), no test, no predictions.
    assert m.metrics == {"dev_score": m.stages[0].best_dev}
    on_disk = json.loads((unit.path / "metrics.json").read_text())
    assert set(on_disk) == set(unit.manifest()) - {"stage", "key"}
    assert "labels" not in on_disk and "pseudo_labels" not in on_disk["stages"][0]
    assert not list(unit.path.glob("predictions_*"))
    assert unit.done()
    model = load_finetuned(unit.path / "checkpoint")
    assert model.n_prompt == 9
    stamp = (unit.path / "metrics.json").stat().st_mtime_ns
    again = run_point(unit, spec, tmp_path, tok)
    assert again == m and (unit.path / "metrics.json").stat().st_mtime_ns == stamp


def test_a_nan_loss_stops_the_finetune_at_its_step(
    tok: Tokenizer, pqa: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORCE_NAN_ENV, "3")
    task = PubMedQA()
    model = tiny_model(tok.vocab_size, 9)
    budget = source_budget(tok, task.all_targets(), 9, 96)
    pool = encode_examples(tok, pqa["train"][:40], budget)
    s = train_settings(batch_size=4, lr=1e-3, epochs=2, patience=2)
    with pytest.raises(NonFiniteLoss, match=r"pubmedqa: training loss .* at step 3\b"):
        fit(model, task, tok, pool[:16], pool[16:20], s)


def train_settings(batch_size: int, lr: float, epochs: int, **kw: object) -> TrainSettings:
    """The trainer settings `FinetuneConfig`'s defaults give, with some replaced."""
    cfg = FinetuneConfig(**{k: v for k, v in kw.items() if k in FinetuneConfig.model_fields})
    base = settings_for(cfg, batch_size, lr, 0, None, cfg.early_stop_on)
    rest = {k: v for k, v in kw.items() if k not in FinetuneConfig.model_fields}
    return replace(base, epochs=epochs, **rest)


def test_candidate_longer_than_the_context_is_unscorable() -> None:
    model = tiny_model(40, 9, block=32).eval()
    src = list(range(4, 24))  # 20 source + 9 prompt = 29 of 32 positions
    fits, too_long = [5, 6, 3], [5, 6, 7, 8, 3]
    scores = continuation_logprobs(model, [src], [[fits, too_long]])[0]
    assert scores[0] > float("-inf") and scores[1] == float("-inf")
