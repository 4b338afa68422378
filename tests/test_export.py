"""Hugging Face export: the exported model and tokenizer reproduce ours exactly.

Tiny GPTs (dense, 75% sparse with the masks applied, and one without biases) are saved as our
checkpoints, exported, and loaded back with `AutoModelForCausalLM` / `AutoTokenizer`: logits,
greedy generation and token ids must equal ours, and the card's soft-prompt recipe, run as
written, must reproduce `PromptedLM`. Everything runs offline (no Hub access is attempted).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mediswift.export import (  # noqa: E402
    CARD_FILE,
    SOFT_PROMPT_FILE,
    TOKENIZER_MODULE,
    export_model,
)
from mediswift.finetune.point import PROMPT_FILE, save_finetuned  # noqa: E402
from mediswift.finetune.scoring import greedy_generate  # noqa: E402
from mediswift.model.gpt import GPT, GPTConfig  # noqa: E402
from mediswift.model.soft_prompt import PromptedLM  # noqa: E402
from mediswift.sparsity.masks import make_masks  # noqa: E402
from mediswift.text import moses  # noqa: E402
from mediswift.text.bpe import learn_bpe  # noqa: E402
from mediswift.text.tokenizer import Tokenizer, document_text, write_tokenizer_config  # noqa: E402
from mediswift.train.checkpoint import save_checkpoint  # noqa: E402

TOL = 1e-4
BLOCK = 64
# Texts that exercise Moses' corners: dashes, apostrophes, units, unicode, unknown characters,
# special tokens written as text, extra whitespace, nothing at all.
EDGE_TEXTS = [
    "",
    "   \n\t ",
    "IL-6-mediated NF-κB signalling (p < 0.05) in 3'-UTR; the patients' CD4+ T-cells...",
    "Doses of 5 mg/kg/day vs. 10 mg/kg/day -- e.g. in U.S. trials (n=1,204; 95% CI 1.2-3.4).",
    "β-lactamase, α1-antitrypsin, Δ9-THC and 25 °C; 日本語 and emoji 🧬 are rare here.",
    "Special tokens as text: <s> </s> <pad> <unk> stay text.",
    'Line one.\nLine two.\n\nA new paragraph... and "quotes" & ampersands <tag>.',
]


@pytest.fixture(scope="module")
def corpus(mirror_dir: Path) -> list[str]:
    path = mirror_dir / "corpus" / "biomed_text.jsonl"
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [document_text(r.get("title"), r.get("text")) for r in rows]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    """A small BPE vocabulary learned on a tenth of the mirror corpus, as the vocab stage does."""
    d = tmp_path_factory.mktemp("tok")
    learn_bpe((moses.moses_tokenize(t) for t in corpus[::10]), d / "bpe.model", 1000)
    write_tokenizer_config(d)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> Tokenizer:
    return Tokenizer.load(tok_dir)


@pytest.fixture(scope="module")
def texts(corpus: list[str], mirror_dir: Path) -> list[str]:
    """Real texts of every source of the mirror corpus, PubMedQA questions and contexts, and
    the edge cases."""
    pqa = json.loads((mirror_dir / "pubmedqa" / "ori_pqal.json").read_text())
    items = list(pqa.values())[:25]
    qa = [i["QUESTION"] for i in items] + [" ".join(i["CONTEXTS"]) for i in items]
    return corpus[3::40] + qa + EDGE_TEXTS


def tiny_gpt(vocab: int, bias: bool = True, seed: int = 0) -> GPT:
    """A tiny GPT whose every parameter (biases and LayerNorms included) is non-trivial, so a
    misplaced or transposed tensor shows in the logits."""
    torch.manual_seed(seed)
    lm = GPT(
        GPTConfig(n_layer=2, n_head=4, d_model=64, vocab_size=vocab, block_size=BLOCK, bias=bias)
    )
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return lm.eval()


def sparsify(lm: GPT, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Masks applied the way training keeps them: masked weights exactly zero."""
    masks = make_masks(lm, sparsity, seed)
    with torch.no_grad():
        for name, m in masks.items():
            lm.get_parameter(name).mul_(m)
    return masks


def load_hf(out: Path, attn: str = "sdpa") -> Any:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, output_loading_info=True, local_files_only=True, attn_implementation=attn
    )
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return model.eval()


def load_hf_tok(out: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(
        out, trust_remote_code=True, local_files_only=True
    )


def token_batch(tok: Tokenizer, corpus: list[str], rows: int = 3) -> torch.Tensor:
    """(rows, BLOCK) real token ids: the start of the first long enough documents."""
    ids = [t for t in (tok.encode(x) for x in corpus[:50]) if len(t) >= BLOCK][:rows]
    return torch.tensor([t[:BLOCK] for t in ids])


VARIANTS = {  # name -> (sparsity, bias)
    "dense": (0.0, True),
    "sparse75": (0.75, True),
    "dense-nobias": (0.0, False),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tok: Tokenizer, tok_dir: Path):
    """name -> (our model, its export folder), exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, (sparsity, bias) in VARIANTS.items():
        lm = tiny_gpt(tok.vocab_size, bias)
        masks = sparsify(lm, sparsity)
        save_checkpoint(root / f"ckpt-{name}", lm, masks=masks)
        card = {
            "name": f"tiny-{name}",
            "model": "tiny",
            "sparsity": sparsity,
            "train_flops": 1.25e15,
            "checkpoint": "/somewhere/only/this/machine/has",
            "metrics": {"pubmedqa": {"test_score": 0.552, "test_generate": 0.511}},
            "pmc_commercial_only": True,
        }
        out[name] = (lm, export_model(root / f"ckpt-{name}", tok_dir, root / name, card))
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_equal_ours(
    name: str, exported: dict, tok: Tokenizer, corpus: list[str], one_torch_thread: None
) -> None:
    lm, out = exported[name]
    idx = token_batch(tok, corpus)
    with torch.no_grad():
        ours = lm(idx)[0]
    for attn in ("sdpa", "eager"):  # both of transformers' attention paths on CPU
        model = load_hf(out, attn)
        with torch.no_grad():
            diff = (ours - model(idx).logits).abs().max().item()
        print(f"{name} ({attn}): max |logit difference| = {diff:.3g}")
        assert diff < TOL
    if VARIANTS[name][0]:  # the zeros are exported as they are
        c_attn = model.transformer.h[0].attn.c_attn.weight
        assert (c_attn == 0).float().mean().item() == pytest.approx(0.75, abs=1e-3)


def test_greedy_generation_equal(exported: dict, tok: Tokenizer, one_torch_thread: None) -> None:
    lm, out = exported["sparse75"]
    model = load_hf(out)
    start = torch.tensor([tok.encode("Tricuspid valve regurgitation and lithium")])
    got = model.generate(start, max_new_tokens=20, do_sample=False)[0, start.shape[1] :].tolist()
    ids = start[0].tolist()
    with torch.no_grad():
        for _ in range(20):
            nxt = int(lm(torch.tensor([ids]))[0][0, -1].argmax())
            ids.append(nxt)
            if nxt == tok.eos_id:
                break
    assert got == ids[start.shape[1] :]


def test_tokenizer_ids_equal_ours(
    exported: dict, tok: Tokenizer, texts: list[str], one_torch_thread: None
) -> None:
    hf = load_hf_tok(exported["dense"][1])
    assert type(hf).__name__ == "MediSwiftTokenizer"
    assert len(hf) == tok.vocab_size
    assert (hf.pad_token_id, hf.unk_token_id, hf.bos_token_id, hf.eos_token_id) == (
        tok.pad_id,
        tok.unk_id,
        tok.bos_id,
        tok.eos_id,
    )
    ours = tok.encode_batch(texts)
    assert [hf(t)["input_ids"] for t in texts] == ours
    assert hf(texts[:5])["input_ids"] == ours[:5]  # batched calls too
    assert any(tok.unk_id in ids for ids in ours)  # unknown characters were exercised
    for ids in ours[:20] + ours[-len(EDGE_TEXTS) :]:
        # Ours plus the space a word-initial first piece carries (test_decode_keeps_the_space_*)
        assert hf.decode(ids).removeprefix(" ") == tok.decode(ids)


def test_decode_keeps_the_space_before_a_continuation(
    exported: dict, one_torch_thread: None
) -> None:
    """A continuation decoded alone or after its prompt keeps the space before its first word,
    and only where Moses puts one (punctuation and word pieces join what precedes them)."""
    hf = load_hf_tok(exported["dense"][1])
    prompt = hf("Aspirin reduces the risk of")["input_ids"]
    new = hf("the heart")["input_ids"]
    whole = hf.decode(prompt + new)
    assert whole.startswith(hf.decode(prompt))
    assert whole.endswith("risk of the heart")
    assert hf.decode(new) == " the heart"  # what the text-generation pipeline appends
    assert hf.decode(hf(", and")["input_ids"]) == ", and"
    word = hf("Aspirin")["input_ids"]
    assert len(word) > 1  # split into pieces: the second part continues the word
    assert hf.decode(word[:1]) + hf.decode(word[1:]) == " Aspirin"
    assert hf.decode([hf.eos_token_id] + new) == " the heart"  # control tokens are not shown
    assert hf.decode([]) == ""


def test_text_generation_pipeline_reads_naturally(exported: dict, one_torch_thread: None) -> None:
    _, out = exported["dense"]
    hf = load_hf_tok(out)
    vocab = hf.get_vocab()
    # Only whole words may be generated, so each new token must come with a space before it.
    words = {i for p, i in vocab.items() if p.startswith("\u2581") and p[1:].isalpha()}
    others = sorted(set(vocab.values()) - words)
    generate = transformers.pipeline("text-generation", model=load_hf(out), tokenizer=hf)
    prompt = "Aspirin reduces the risk of"
    kwargs = dict(max_new_tokens=4, do_sample=False, suppress_tokens=others)
    text = generate(prompt, **kwargs)[0]["generated_text"]
    new_ids = generate(prompt, return_tensors=True, **kwargs)[0]["generated_token_ids"]
    new_words = [hf.convert_ids_to_tokens(i)[1:] for i in new_ids[len(hf(prompt)["input_ids"]) :]]
    assert len(new_words) == 4
    assert text == " ".join([prompt, *new_words])
    assert generate(prompt, return_full_text=False, **kwargs)[0]["generated_text"] == "".join(
        f" {w}" for w in new_words
    )


def test_offsets_are_refused_by_name(exported: dict) -> None:
    hf = load_hf_tok(exported["dense"][1])
    with pytest.raises(NotImplementedError, match="MediSwiftTokenizer .* cannot return offsets"):
        hf("IL-6 levels", return_offsets_mapping=True)
    with pytest.raises(NotImplementedError, match="MediSwiftTokenizer"):
        hf(["IL-6 levels", "a text"], return_offsets_mapping=True)
    assert hf("IL-6 levels")["input_ids"]  # without offsets it still tokenizes


def test_export_states_the_trained_length(
    tmp_path: Path, tok: Tokenizer, tok_dir: Path, corpus: list[str], one_torch_thread: None
) -> None:
    """A model of BLOCK positions trained on BLOCK // 2 tokens exports BLOCK // 2 positions:
    n_positions, model_max_length and the position embedding say so, and the logits of the
    positions kept are unchanged."""
    trained = BLOCK // 2
    lm = tiny_gpt(tok.vocab_size)
    save_checkpoint(tmp_path / "ckpt", lm)
    out = export_model(tmp_path / "ckpt", tok_dir, tmp_path / "hf", trained_len=trained)
    config = json.loads((out / "config.json").read_text())
    assert config["n_positions"] == trained
    assert config["mediswift"]["checkpoint_block_size"] == BLOCK
    assert load_hf_tok(out).model_max_length == trained
    model = load_hf(out)
    assert model.transformer.wpe.weight.shape[0] == trained
    idx = token_batch(tok, corpus)[:, :trained]
    with torch.no_grad():
        diff = (lm(idx)[0] - model(idx).logits).abs().max().item()
    assert diff < TOL
    assert f"context | {trained} tokens" in (out / CARD_FILE).read_text()
    # A longer stated length than the checkpoint has positions keeps all of them.
    longer = export_model(tmp_path / "ckpt", tok_dir, tmp_path / "hf2", trained_len=BLOCK * 2)
    assert json.loads((longer / "config.json").read_text())["n_positions"] == BLOCK
    with pytest.raises(ValueError, match="at least one position"):
        export_model(tmp_path / "ckpt", tok_dir, tmp_path / "hf3", trained_len=0)


def test_fine_tuned_point_exports_its_own_max_len(tmp_path: Path) -> None:
    """The length of a fine-tuned point is the one its fine-tuning used, from its manifest."""
    from mediswift.artifacts import MANIFEST
    from mediswift.export_select import point_max_len

    assert point_max_len(tmp_path) is None  # no manifest: unknown, every position is kept
    (tmp_path / MANIFEST).write_text(json.dumps({"max_len": 192, "n_prompt": 9}))
    assert point_max_len(tmp_path) == 192


@pytest.mark.slow
def test_tokenizer_ids_equal_ours_on_whole_mirror_corpus(
    exported: dict, tok: Tokenizer, corpus: list[str]
) -> None:
    """Every document of the mirror corpus (8,163; about 25 s: Moses runs in pure Python)."""
    hf = load_hf_tok(exported["dense"][1])
    ours = tok.encode_batch(corpus)
    mismatched = [
        i for i, (t, ids) in enumerate(zip(corpus, ours, strict=True)) if hf(t)["input_ids"] != ids
    ]
    assert not mismatched, f"{len(mismatched)} documents differ, first {mismatched[:5]}"


def test_card_names_sparsity_data_and_licence(exported: dict) -> None:
    card = (exported["sparse75"][1] / CARD_FILE).read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "# tiny-sparse75" in card
    assert "Pre-training sparsity: **75.0%**" in card
    assert "measured in the exported weights: **75.0%**" in card
    assert "1.25e+15" in card  # training FLOPs
    assert "| pubmedqa.test_score | 0.5520 |" in card
    assert "nlm.nih.gov/databases/download/terms_and_conditions" in card
    assert "only on articles whose licence allows commercial use" in card
    assert "/somewhere" not in card  # paths of this machine never leak into a card
    dense = (exported["dense"][1] / CARD_FILE).read_text()
    assert "Pre-training sparsity: **0%**" in dense
    assert SOFT_PROMPT_FILE not in dense


def _code_block(card: str, heading: str) -> str:
    section = card.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no code block under {heading}"
    return match.group(1)


def test_card_usage_example_runs(
    exported: dict, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    lm, out = exported["dense"]
    monkeypatch.chdir(out)  # the example reads the folder it documents
    ns: dict[str, Any] = {}
    exec(_code_block((out / CARD_FILE).read_text(), "## How to use"), ns)
    start = tok.encode("Aspirin reduces the risk of")
    ids = list(start)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(lm(torch.tensor([ids]))[0][0, -1].argmax()))
            if ids[-1] == tok.eos_id:
                break
    assert ns["out"][0].tolist() == ids


def test_soft_prompt_recipe_reproduces_prompted_lm(
    tmp_path: Path,
    tok: Tokenizer,
    tok_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    lm = tiny_gpt(tok.vocab_size, seed=1)
    sparsify(lm, 0.5)  # a fine-tuned point of a sparse variant: masks dropped, zeros kept
    model = PromptedLM(lm, 5).eval()
    model.prompt.init_from_vocab(lm.wte, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.prompt.weight.add_(torch.randn_like(model.prompt.weight) * 0.1)
    save_finetuned(tmp_path / "point", model)
    card = {"name": "tiny-s0.5-pubmedqa", "task": "pubmedqa", "point": {"lr": 1e-4, "seed": 0}}
    out = export_model(
        tmp_path / "point", tok_dir, tmp_path / "hf", card, prompt=tmp_path / "point" / PROMPT_FILE
    )
    assert (out / SOFT_PROMPT_FILE).read_bytes() == (tmp_path / "point" / PROMPT_FILE).read_bytes()
    text = (out / CARD_FILE).read_text()
    assert "fine-tuned densely on **pubmedqa**" in text and "| fine-tuning lr | 0.0001 |" in text

    monkeypatch.chdir(out)
    ns: dict[str, Any] = {}
    exec(_code_block(text, "## Soft prompt"), ns)  # the card's recipe, as written

    source = tok.encode(ns["source"])
    assert ns["source_ids"][0].tolist() == source
    idx = torch.tensor([source + [tok.pad_id] * model.n_prompt])  # prompt rows get replaced
    with torch.no_grad():
        ours = model(idx, torch.tensor([len(source)]))[0]
    diff = (ours - ns["logits"]).abs().max().item()
    print(f"soft prompt: max |logit difference| = {diff:.3g}")
    assert diff < TOL
    ours_gen = greedy_generate(model, [source], max_new=16, eos_id=tok.eos_id)[0]
    theirs = ns["new_ids"][0].tolist()
    assert theirs[: len(ours_gen)] == ours_gen
    assert len(theirs) == len(ours_gen) or theirs[len(ours_gen)] == tok.eos_id


def test_export_refuses_foreign_folders_and_bad_prompts(
    tmp_path: Path, tok: Tokenizer, tok_dir: Path
) -> None:
    lm = tiny_gpt(tok.vocab_size)
    save_checkpoint(tmp_path / "ckpt", lm)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_model(tmp_path / "ckpt", tok_dir, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    out = export_model(tmp_path / "ckpt", tok_dir, tmp_path / "hf")
    export_model(tmp_path / "ckpt", tok_dir, out)  # an earlier export is replaced
    assert (out / f"{TOKENIZER_MODULE}.py").is_file()
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
    # An earlier export holding the user's own files is not replaced (they would be deleted).
    (out / "my-results.csv").write_text("kept")
    with pytest.raises(FileExistsError, match="my-results.csv"):
        export_model(tmp_path / "ckpt", tok_dir, out)
    assert (out / "my-results.csv").read_text() == "kept"
    (out / "my-results.csv").unlink()
    # --out as a link: the export it names is replaced, the link stays, no stray link is left.
    link = tmp_path / "linkout"
    link.symlink_to(out)
    assert export_model(tmp_path / "ckpt", tok_dir, link) == out.resolve()
    assert link.is_symlink() and (link / "config.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]

    import mediswift.export

    with pytest.MonkeyPatch.context() as mp:  # a model setting the export cannot map yet
        mp.setattr(mediswift.export, "SUPPORTED_CONFIG", frozenset({"n_layer", "n_head"}))
        with pytest.raises(ValueError, match="no GPT-2 mapping"):
            export_model(tmp_path / "ckpt", tok_dir, tmp_path / "hf3")

    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 65)}, str(tmp_path / "bad_prompt.safetensors"))
    with pytest.raises(ValueError, match="soft prompt"):
        export_model(
            tmp_path / "ckpt", tok_dir, tmp_path / "hf2", prompt=tmp_path / "bad_prompt.safetensors"
        )
    assert not (tmp_path / "hf2").exists()


@pytest.mark.subprocess
def test_export_library_does_not_import_transformers() -> None:
    code = "import sys, mediswift.export; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
