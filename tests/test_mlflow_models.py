"""MLflow Models, the Model Registry, dataset inputs and the FLOPs axis.

A tiny GPT is logged the way the stages log their models (`tasks.tracking.register_model`: export
to a Hugging Face directory, the transformers flavour, registration, aliases): the registered
version must load back through its alias with the logits of our model, carry an input example
and a signature, and be logged once per run. A fine-tuned point must generate as the pipeline
evaluated it, soft prompt after the source: the registered model's pyfunc and its export loaded
with transformers both give the pipeline's own predictions (`mediswift.finetune.scoring`) on
PubMedQA test examples, which the same model without its prompt does not.
The flow test runs the finetune and evaluate stages twice (the second time with one more seed):
every sweep parent lists all its points, cached ones included, and names its selected child,
whose run holds the registered model `mediswift-<variant>-<task>@selected`. Everything runs
offline: no Hugging Face Hub access is attempted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from mediswift.export import export_model  # noqa: E402
from mediswift.finetune.formats import Example  # noqa: E402
from mediswift.finetune.point import save_finetuned  # noqa: E402
from mediswift.finetune.pubmedqa import PubMedQA  # noqa: E402
from mediswift.finetune.scoring import (  # noqa: E402
    encode_examples,
    max_target_tokens,
    predict,
    source_budget,
)
from mediswift.manifests import ModelRegistration, RegisteredModel  # noqa: E402
from mediswift.model.gpt import GPT, GPTConfig  # noqa: E402
from mediswift.model.soft_prompt import PromptedLM  # noqa: E402
from mediswift.names import model_name, variant_name  # noqa: E402
from mediswift.sparsity.masks import make_masks  # noqa: E402
from mediswift.text import moses  # noqa: E402
from mediswift.text.bpe import learn_bpe  # noqa: E402
from mediswift.text.tokenizer import Tokenizer, document_text, write_tokenizer_config  # noqa: E402
from mediswift.tracking import (  # noqa: E402
    MODEL_TAG,
    DatasetRef,
    RunLogger,
    Tracker,
    default_tracking_uri,
    recipe_alias,
)
from mediswift.train.checkpoint import save_checkpoint  # noqa: E402
from mediswift.train.pretrain import VariantSpec, launch_variant, read_metrics  # noqa: E402
from tasks.tracking import register_model  # noqa: E402

BLOCK = 64


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, mirror_dir: Path) -> Path:
    """A small BPE vocabulary learned on part of the mirror corpus, as the vocab stage does."""
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = [document_text(r.get("title"), r.get("text")) for r in rows[::20]]
    d = tmp_path_factory.mktemp("tok")
    learn_bpe((moses.moses_tokenize(t) for t in texts), d / "bpe.model", 600)
    write_tokenizer_config(d)
    return d


def tiny_lm(vocab: int, sparsity: float = 0.0) -> tuple[GPT, dict[str, torch.Tensor]]:
    """A tiny GPT with non-trivial weights (and masks applied, when sparse)."""
    torch.manual_seed(0)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, d_model=32, vocab_size=vocab, block_size=BLOCK))
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    masks = make_masks(lm, sparsity, 0) if sparsity else {}
    with torch.no_grad():
        for name, m in masks.items():
            lm.get_parameter(name).mul_(m)
    return lm.eval(), masks


def new_run(home: Path, experiment: str = "models-test") -> tuple[str, str]:
    uri = default_tracking_uri(home)
    with Tracker(uri, experiment, artifact_root=home / "mlruns").run("tiny") as run:
        pass
    return uri, run.run_id


def test_model_names_are_the_variant_names_and_aliases() -> None:
    """One name per model wherever it appears (registry, export card): the variant's name (as
    in the tables) behind `mediswift-`, then the task of a fine-tuned point."""
    assert model_name(variant_name("tiny", 0.0)) == "mediswift-tiny-dense"
    assert model_name(variant_name("tiny", 0.75)) == "mediswift-tiny-s75"
    assert model_name(variant_name("med", 0.5, "rigl")) == "mediswift-med-s50-rigl"
    assert model_name(variant_name("tiny", 0.0, "rigl")) == "mediswift-tiny-dense"
    assert model_name("tiny-s75", "hoc") == "mediswift-tiny-s75-hoc"
    assert recipe_alias("paper-med") == "recipe-paper-med"
    assert recipe_alias("my recipe/v2") == "recipe-my-recipe-v2"


def test_registry_prints_go_to_the_log_not_the_console(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow's untimestamped "registered"/"created version" prints become log records."""
    import logging

    from mlflow.utils.logging_utils import eprint

    from mediswift.tracking.registry import _registry_prints_logged

    with (
        caplog.at_level(logging.INFO, logger="mediswift.tracking.registry"),
        _registry_prints_logged(),
    ):
        eprint("Successfully registered model 'mediswift-tiny-dense'.")
        eprint("Created version '1' of model 'mediswift-tiny-dense'.")
    assert capsys.readouterr() == ("", "")
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]
    assert "Created version '1'" in caplog.records[1].getMessage()


def test_variant_is_logged_registered_and_loads_through_its_alias(
    tmp_path: Path, tok_dir: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    tok = Tokenizer.load(tok_dir)
    lm, masks = tiny_lm(tok.vocab_size, 0.75)
    save_checkpoint(tmp_path / "ckpt", lm, masks=masks)
    uri, run_id = new_run(tmp_path / "home")
    # Whatever MLFLOW_TRACKING_URI says, logging uses the given store and leaves it as it was.
    wrong = f"sqlite:///{tmp_path / 'wrong.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", wrong)
    name = "mediswift-tiny-s75"

    def register(aliases: list[str]) -> RegisteredModel:
        return register_model.fn(
            ModelRegistration(
                tracking_uri=uri,
                run_id=run_id,
                name=name,
                checkpoint=str(tmp_path / "ckpt"),
                tokenizer_dir=str(tok_dir),
                card={"name": "tiny-s75", "model": "tiny", "sparsity": 0.75, "train_flops": 1e12},
                aliases=aliases,
                tags={"mediswift.variant": "tiny-s75"},
            )
        )

    t0 = time.perf_counter()
    ref = register(["recipe-test"])
    print(f"export + log + register a tiny model: {time.perf_counter() - t0:.1f} s")
    assert os.environ["MLFLOW_TRACKING_URI"] == wrong
    assert not (tmp_path / "wrong.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for this test's own fluent calls
    client = MlflowClient(uri)
    assert ref.version == "1" and ref.uri == f"models:/{name}/1"
    assert str(client.get_model_version_by_alias(name, "recipe-test").version) == "1"
    assert client.get_model_version(name, "1").tags["mediswift.variant"] == "tiny-s75"
    assert client.get_run(run_id).data.tags[MODEL_TAG] == f"{name}/1"

    # The logged model: transformers flavour with a pyfunc, a signature and an input example,
    # named by its registry name (no path of the temporary export is recorded).
    info = mlflow.models.get_model_info(f"models:/{name}@recipe-test")
    assert {"transformers", "python_function"} <= set(info.flavors)
    assert info.flavors["transformers"]["source_model_name"] == name
    assert info.signature.inputs.input_types()[0].name == "string"
    assert {p.name for p in info.signature.params} == {"max_new_tokens", "do_sample"}
    assert info.saved_input_example_info["artifact_path"] == "input_example.json"
    files = set(os.listdir(mlflow.artifacts.download_artifacts(f"models:/{name}/1")))
    assert {"README.md", "LICENSE.txt", "MLmodel", "input_example.json"} <= files

    # It loads back through the alias as the exported GPT-2: our logits, within 1e-4.
    parts = mlflow.transformers.load_model(f"models:/{name}@recipe-test", return_type="components")
    ids = torch.tensor([tok.encode("Aspirin reduces the risk of myocardial infarction.")])
    with torch.no_grad():
        ours, _ = lm(ids)
        theirs = parts["model"].eval()(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert parts["tokenizer"](["IL-6 levels"])["input_ids"][0] == tok.encode("IL-6 levels")
    text = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(
        ["Aspirin reduces"], params={"max_new_tokens": 4}
    )
    assert isinstance(text[0], str) and text[0]

    # Called again for the same run (a stage run again): no new version, only the aliases move.
    again = register(["recipe-test", "recipe-other"])
    assert again.version == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert str(client.get_model_version_by_alias(name, "recipe-other").version) == "1"


N_PROMPT = 5


@dataclass(frozen=True)
class EvaluatedPoint:
    """A fine-tuned point as `run_point` leaves it, and the pipeline's own greedy predictions
    (generated text, parsed label) on a few PubMedQA test examples."""

    checkpoint: Path
    examples: list[Example]
    texts: list[str]
    labels: list
    source_budget: int
    max_new_tokens: int


@pytest.fixture(scope="module")
def evaluated_point(tmp_path_factory: pytest.TempPathFactory, tok_dir: Path, mirror_dir: Path):
    """A tiny point whose prompt steers it (so a model without the prompt answers otherwise),
    predicted on the first PubMedQA test examples the way the finetune stage evaluates."""
    tok = Tokenizer.load(tok_dir)
    lm, _ = tiny_lm(tok.vocab_size)
    model = PromptedLM(lm, N_PROMPT).eval()
    steer = torch.randn(model.prompt.weight.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.prompt.weight.copy_(steer * 0.1)  # answers still differ from source to source
    task = PubMedQA()
    files = {role: mirror_dir / "pubmedqa" / name for role, name in task.files.items()}
    # Test sources are cut to the budget; a short one is not (and pads a batch).
    short = "question: Does aspirin prevent colorectal cancer? context: It does."
    examples = [*task.load(files).splits["test"][:3], Example("short", short, "", "yes")]
    targets = task.all_targets()
    budget = source_budget(tok, targets, N_PROMPT, BLOCK, task.name)  # PubMedQA sources: longer
    max_new = max_target_tokens(tok, targets)
    data = encode_examples(tok, examples, budget)
    labels, texts = predict(model, task, tok, data, "generate", batch_size=4, max_new=max_new)
    point = save_finetuned(tmp_path_factory.mktemp("point") / "checkpoint", model)
    return EvaluatedPoint(point, examples, texts, labels, budget, max_new)


def test_exported_point_generates_the_pipeline_predictions_with_transformers(
    tmp_path: Path, tok_dir: Path, evaluated_point: EvaluatedPoint, one_torch_thread: None
) -> None:
    """The export of a fine-tuned point, loaded as its card says (trust_remote_code), answers
    every test source with the pipeline's own prediction, one by one and as a padded batch."""
    p = evaluated_point
    out = export_model(
        p.checkpoint,
        tok_dir,
        tmp_path / "mediswift-tiny-dense-pubmedqa",
        {"name": "mediswift-tiny-dense-pubmedqa", "task": "pubmedqa"},
        p.checkpoint / "prompt.safetensors",
        source_budget=p.source_budget,
        max_new_tokens=p.max_new_tokens,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    sources = [e.source for e in p.examples]

    def answer(ids: torch.Tensor, generated: torch.Tensor) -> str:
        # The tokenizer keeps the space before a continuation's first word; the pipeline's
        # decoder does not.
        return tok.decode(generated[ids.shape[0] :], skip_special_tokens=True).strip()

    one_by_one = []
    for source in sources:
        ids = tok(source, return_tensors="pt").input_ids
        one_by_one.append(answer(ids[0], model.generate(ids, do_sample=False)[0]))
    assert one_by_one == p.texts
    assert [PubMedQA().parse(t) for t in one_by_one] == p.labels

    batch = tok(sources, return_tensors="pt", padding=True)
    generated = model.generate(**batch, do_sample=False)
    assert [answer(i, g) for i, g in zip(batch.input_ids, generated, strict=True)] == p.texts

    # The same weights without the prompt answer otherwise: the check above can fail.
    without = []
    for source in sources:
        ids = tok(source, return_tensors="pt").input_ids[:, : p.source_budget]
        new = model.generate(inputs_embeds=model.get_input_embeddings()(ids), do_sample=False)
        without.append(tok.decode(new[0], skip_special_tokens=True).strip())
    assert without != p.texts


def test_selected_point_is_registered_generating_the_pipeline_predictions(
    tmp_path: Path,
    tok_dir: Path,
    evaluated_point: EvaluatedPoint,
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    """`models:/<name>@selected` predicts, through the flavour's pyfunc, what the pipeline
    predicted on the test examples; the flavour's own loader still gives model and tokenizer,
    and the soft prompt stays beside the model for code that feeds it by hand."""
    p = evaluated_point
    name = model_name("tiny-dense", "pubmedqa")
    uri, run_id = new_run(tmp_path / "home")
    ref = register_model.fn(
        ModelRegistration(
            tracking_uri=uri,
            run_id=run_id,
            name=name,
            checkpoint=str(p.checkpoint),
            tokenizer_dir=str(tok_dir),
            card={"name": name, "task": "pubmedqa", "point": {"batch_size": 8}},
            prompt=str(p.checkpoint / "prompt.safetensors"),
            source_budget=p.source_budget,
            max_new_tokens=p.max_new_tokens,
            input_example="question: Is aspirin associated with a lower risk",
            aliases=["selected"],
        )
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # `models:/` URIs resolve through it
    assert ref.uri == f"models:/{name}/1"
    model = mlflow.pyfunc.load_model(f"models:/{name}@selected")
    assert list(model.predict([e.source for e in p.examples])) == p.texts

    info = mlflow.models.get_model_info(f"models:/{name}@selected")
    assert {"transformers", "python_function"} <= set(info.flavors)
    assert {q.name: q.default for q in info.signature.params}["max_new_tokens"] == (
        p.max_new_tokens
    )
    local = Path(mlflow.artifacts.download_artifacts(ref.uri))
    assert (local / "soft_prompt.safetensors").is_file()
    assert "## Soft prompt" in (local / "README.md").read_text()
    assert (local / "LICENSE.txt").read_text().startswith("## Licence of the data")
    example = json.loads((local / "input_example.json").read_text())
    assert "aspirin" in json.dumps(example)
    assert str(MlflowClient(uri).get_model_version_by_alias(name, "selected").version) == "1"


def test_datasets_are_run_inputs_with_their_content_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tracker = Tracker(default_tracking_uri(home), "inputs-test", artifact_root=home / "mlruns")
    refs = [
        DatasetRef("tokens-train", "0123456789abcdef", "tokenize/0123456789abcdef", "training"),
        DatasetRef(
            "hoc-test",
            "fedcba9876543210",
            "finetune/units/fedcba9876543210/test.jsonl",
            "test",
            {"examples": 12},
        ),
    ]
    with tracker.run("consumer") as run:
        run.log_datasets(refs)
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    got = {
        i.dataset.name: (i.dataset.digest, json.loads(i.dataset.source)["uri"], i.tags[0].value)
        for i in inputs
    }
    assert got == {
        "tokens-train": ("0123456789abcdef", "tokenize/0123456789abcdef", "training"),
        "hoc-test": ("fedcba9876543210", "finetune/units/fedcba9876543210/test.jsonl", "test"),
    }
    assert json.loads(next(i for i in inputs if i.dataset.name == "hoc-test").dataset.profile) == {
        "examples": 12
    }


def test_runs_logging_one_new_dataset_at_once_all_record_it(tmp_path: Path) -> None:
    """Grid points run in threads: their first runs log the same new task split together."""
    import threading

    home = tmp_path / "home"
    tracker = Tracker(default_tracking_uri(home), "race", artifact_root=home / "mlruns")
    ref = DatasetRef(
        "pubmedqa-train", "00ff00ff00ff00ff", "finetune/units/x/train.jsonl", "training"
    )
    runs = [tracker.client.create_run(tracker.experiment_id).info.run_id for _ in range(6)]
    start = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def log(run_id: str) -> None:
        start.wait()
        try:
            RunLogger(tracker.client, run_id).log_datasets([ref])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=log, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in runs:
        assert [i.dataset.digest for i in tracker.client.get_run(r).inputs.dataset_inputs] == [
            "00ff00ff00ff00ff"
        ]


@pytest.mark.subprocess
def test_cumulative_flops_are_a_step_metric(tmp_path: Path, one_torch_thread: None) -> None:
    """Every logged step carries the training FLOPs so far; the last equals the record's."""
    from mediswift.config import PretrainConfig
    from mediswift.train.pretrain import training_flops_for

    cfg = PretrainConfig(
        model="tiny",
        seq_len=16,
        block_size=32,
        global_batch=4,
        micro_batch=4,
        steps=6,
        log_every=2,
        eval_every=3,
        eval_batches=1,
        checkpoint_every=6,
    )
    spec = VariantSpec(
        name="tiny-s75",
        config=cfg.model_dump(mode="json"),
        sparsity=0.75,
        vocab_size=64,
        out_dir=str(tmp_path / "variant"),
        data="synthetic",
    )
    record = launch_variant(spec)
    rows = [(s, m) for s, m in read_metrics(tmp_path / "variant" / "metrics.jsonl") if "lr" in m]
    assert [s for s, _ in rows] == [2, 3, 4, 6]
    flops = [m["train_flops"] for _, m in rows]
    per_token = training_flops_for(cfg, spec, 1.0)
    assert flops == pytest.approx([s * 4 * 16 * per_token for s, _ in rows])
    assert flops[-1] == pytest.approx(record["train_flops"])
    assert all(a < b for a, b in zip(flops, flops[1:], strict=False))


FLOW_RECIPE = """name: models-flow-test
finetune:
  seeds: [0]
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
"""


@pytest.mark.slow
def test_sweeps_list_their_points_and_register_the_selected_one(
    prefect_harness, mirror_dir: Path, tmp_path: Path
) -> None:
    """finetune + evaluate on two hand-made tiny variants, then again with one more seed."""
    from test_finetune_flow import make_home

    from flows.pipeline import mediswift
    from flows.registry import plan
    from mediswift.config import load_recipe
    from mediswift.overrides import Overrides

    recipe, home = make_home(tmp_path, mirror_dir, FLOW_RECIPE)
    client = MlflowClient(default_tracking_uri(home))

    def run(seeds: list[int]) -> tuple[dict, dict]:
        mediswift(
            recipe=str(recipe),
            stages=["finetune", "evaluate"],
            home=str(home),
            overrides=Overrides(finetune_seeds=seeds),
        )
        arts = plan(load_recipe(str(recipe), {"finetune": {"seeds": seeds}}), home)
        return arts["finetune"].manifest(), arts["evaluate"].manifest()

    def answers_as_evaluated(p: dict, data: Path) -> None:
        """The registered model answers the first test sources as the point's evaluation did."""
        with open(home / p["unit"] / "predictions_generate.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        texts = {r["id"]: r["text"] for r in rows if r["split"] == "test"}
        with open(data / "test.jsonl", encoding="utf-8") as f:
            examples = [json.loads(line) for line, _ in zip(f, range(3), strict=False)]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(home))
            model = mlflow.pyfunc.load_model(p["registered_model"])
        answers = model.predict([e["source"] for e in examples])
        assert list(answers) == [texts[e["id"]] for e in examples]

    def check(ft: dict, ev: dict) -> None:
        for sweep in ft["sweeps"]:
            parent = client.get_run(sweep["parent_run_id"]).data.tags
            points = {
                f"mediswift.point.b{p['batch_size']}-lr{p['lr']:g}-s{p['seed']}": p["mlflow_run_id"]
                for p in sweep["points"]
            }
            assert {k: v for k, v in parent.items() if k.startswith("mediswift.point.")} == points
            assert all(run_id[:8] in parent["mlflow.note.content"] for run_id in points.values())
        for r in ev["results"]:
            p = r["selected_point"]
            name = model_name(r["variant"], "pubmedqa")
            parent = client.get_run(r["parent_run_id"]).data.tags
            assert parent["mediswift.selected.run_id"] == p["mlflow_run_id"]
            assert parent["mediswift.selected.seed"] == str(p["seed"])
            assert parent["mediswift.selected.lr"] == f"{p['lr']:g}"
            assert parent["mediswift.selected.model"] == p["registered_model"]
            selected = client.get_model_version_by_alias(name, "selected")
            assert p["registered_model"] == f"models:/{name}/{selected.version}"
            assert selected.run_id == p["mlflow_run_id"]
            answers_as_evaluated(p, home / ft["tasks"]["pubmedqa"]["data"])
            # The point's run recorded the task splits it consumed, keyed by the data unit.
            inputs = client.get_run(p["mlflow_run_id"]).inputs.dataset_inputs
            data_key = Path(ft["tasks"]["pubmedqa"]["data"]).name
            assert {(i.dataset.name, i.dataset.digest) for i in inputs} == {
                (f"pubmedqa-{s}", data_key) for s in ("train", "dev", "test")
            }

    first = run([0])
    check(*first)
    assert [len(s["points"]) for s in first[0]["sweeps"]] == [2, 2]

    # One more seed: new sweep keys, so new parents; each lists its 4 points, the 2 found done
    # (their runs are children of the first parents) included.
    second = run([0, 1])
    check(*second)
    for old, new in zip(first[0]["sweeps"], second[0]["sweeps"], strict=True):
        assert new["parent_run_id"] != old["parent_run_id"]
        runs = {p["mlflow_run_id"] for p in new["points"]}
        assert len(runs) == 4 and {p["mlflow_run_id"] for p in old["points"]} <= runs
