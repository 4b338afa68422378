"""Decontamination inside the `mediswift` flow (Prefect test harness, the mirror): evaluation
examples hidden in an extra corpus under other ids are dropped by the filter stage, counted in
its manifest and the report (listed in the file the report links), and never reach the token
shards.

The download output is built by hand (one mirror PubMed file, four PMC articles and the crafted
corpus under `<home>/raw`, a download manifest in the contract's format); the filter stage itself
fetches the tasks' files from the mirror, as a real run does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import PipelineConfig, load_recipe
from mediswift.data.download import client_for
from mediswift.finetune.sources import fetch_task_files

pytestmark = pytest.mark.slow

RECIPE = """name: decontamination-test
download: {pubmed_max_files: 1, pmc_max_articles: 4, extra_corpora: [corpus/hidden.jsonl]}
filter: {decontaminate: true}
vocab: {vocab_size: 600, sample_sentences: 20000}
tokenize: {workers: 1}
finetune: {tasks: [pubmedqa, hoc]}
"""
FILLER = "Unrelated words about the weather in spring come first in this record."


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def evaluation_examples(cfg: PipelineConfig, scratch: Path) -> dict[tuple[str, str], list[Any]]:
    """(task, split) -> the task's examples, read from the mirror the way the tasks read them."""
    out = {}
    for name in ("pubmedqa", "hoc"):
        task = cfg.finetune.task(name)
        files = fetch_task_files(client_for(cfg.download), task, scratch, cfg.resolve)
        data = task.load({role: scratch / rel for role, rel in files.items()})
        for split in ("dev", "test", "train"):
            out[(name, split)] = data.splits[split]
    return out


def disguise(text: str) -> str:
    """The same words with other case, punctuation and line breaks."""
    return text.upper().replace(". ", ";\n").replace(", ", " - ")


def hidden_corpus(examples: dict[tuple[str, str], list[Any]]) -> tuple[list[dict], dict]:
    """Corpus records: dev/test examples under other ids (the whole context, or 20 words of
    it), a 12-word fragment (below the 13-word threshold) and a training example (not checked);
    and which example each hidden record stands for."""
    records, hidden = [], {}
    for k, ex in enumerate(examples[("pubmedqa", "test")][:3]):
        context = ex.source.split("context: ", 1)[1]
        records.append({"id": f"hidden:qa-{k}", "text": f"{FILLER} {disguise(context)}"})
        hidden[f"hidden:qa-{k}"] = ("pubmedqa", "test", ex.id)
    for k, ex in enumerate(examples[("hoc", "dev")][:2]):
        words = ex.source.split()
        middle = " ".join(words[len(words) // 2 - 10 : len(words) // 2 + 10])
        records.append({"id": f"hidden:hoc-{k}", "title": "A title", "text": f"{FILLER} {middle}"})
        hidden[f"hidden:hoc-{k}"] = ("hoc", "dev", ex.id)
    words = examples[("pubmedqa", "test")][5].source.split("context: ", 1)[1].split()
    records.append({"id": "near-miss", "text": f"{FILLER} {' '.join(words[10:22])} {FILLER}"})
    train = examples[("hoc", "train")][0].source
    records.append({"id": "train-example", "text": train})
    records += [{"id": f"clean-{i}", "text": f"{FILLER} Record {i} mentions nothing else."}
                for i in range(20)]  # fmt: skip
    return records, hidden


def make_home(root: Path, mirror: Path) -> tuple[Path, Path, dict]:
    """A home whose download stage is done, holding the crafted corpus."""
    home, recipe = root / "home", root / "recipe.yaml"
    root.mkdir(parents=True, exist_ok=True)
    recipe.write_text(RECIPE)
    cfg = load_recipe(str(recipe), mirror=str(mirror))
    records, hidden = hidden_corpus(evaluation_examples(cfg, root / "scratch"))
    src = mirror / "pubmed/baseline/pubmed26n0001.xml.gz"
    rel = f"raw/pubmed/baseline/{src.name}"
    (home / rel).parent.mkdir(parents=True)
    shutil.copy(src, home / rel)
    pubmed = [{"path": rel, "kind": "baseline", "md5": _md5(home / rel),
               "bytes": (home / rel).stat().st_size}]  # fmt: skip
    pmc = []
    for folder in sorted((mirror / "pmc").iterdir())[:4]:
        shutil.copytree(folder, home / "raw/pmc" / folder.name)
        meta = json.loads((folder / f"{folder.name}.json").read_text())
        xml = f"raw/pmc/{folder.name}/{folder.name}.xml"
        pmc.append({
            "path": xml, "metadata": xml[:-4] + ".json", "pmcid": meta["pmcid"],
            "pmid": meta.get("pmid"), "license": meta["license_code"], "md5": _md5(home / xml),
        })  # fmt: skip
    corpus = home / "raw/corpus/hidden.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    plan(cfg, home)["download"].ensure().write_manifest({
        "pubmed": pubmed, "pmc": pmc,
        "corpora": [{"path": "raw/corpus/hidden.jsonl", "name": "hidden",
                     "source": "corpus/hidden.jsonl"}],
        "counts": {}, "skipped": {},
    })  # fmt: skip
    return home, recipe, hidden


def doc_ids(home: Path, shards: list[dict], column: str = "doc_id") -> set[str]:
    return {d for s in shards for d in pq.read_table(home / s["path"], columns=[column])[column].to_pylist()}  # fmt: skip


@pytest.fixture(scope="module")
def decontaminated(prefect_harness, mirror_dir: Path, tmp_path_factory) -> dict[str, Any]:
    home, recipe, hidden = make_home(tmp_path_factory.mktemp("decon"), mirror_dir)
    stages = ["parse", "filter", "vocab", "tokenize"]
    out = mediswift(recipe=str(recipe), stages=stages, home=str(home), mirror=str(mirror_dir))
    manifests = {s: json.loads((Path(out[s]) / "manifest.json").read_text()) for s in stages}
    return {"home": home, "hidden": hidden, "m": manifests, "report": Path(out["report"])}


def test_hidden_examples_never_reach_the_token_shards(decontaminated) -> None:
    home, hidden, m = decontaminated["home"], decontaminated["hidden"], decontaminated["m"]
    parsed = doc_ids(home, m["parse"]["shards"])
    assert set(hidden) | {"near-miss", "train-example"} <= parsed  # they reached the filter
    filtered = doc_ids(home, m["filter"]["shards"])
    tokens = doc_ids(home, m["tokenize"]["shards"])
    assert tokens == filtered and len(tokens) > 250
    assert not set(hidden) & tokens
    # 12 shared words are below the threshold; training examples are not evaluation data.
    assert {"near-miss", "train-example", "clean-0", "clean-19"} <= tokens


def test_manifest_counts_and_names_what_was_found(decontaminated) -> None:
    hidden, m = decontaminated["hidden"], decontaminated["m"]
    counts, found = m["filter"]["counts"], m["filter"]["contamination"]
    assert counts["dropped"]["contamination"] == found["documents"] >= len(hidden)
    assert counts["input"] == sum(counts["kept"].values()) + sum(counts["dropped"].values())
    assert found["ngram"] == 13 and found["tasks"] == ["hoc", "pubmedqa"]
    assert found["examples"]["pubmedqa"]["test"] == 500
    by_example = {(f["task"], f["split"], f["id"]): f["doc_ids"] for f in found["found"]}
    for doc_id, example in hidden.items():
        assert doc_id in by_example[example]
    assert m["filter"]["rules"]["decontaminate"] is True
    # Document mode with GPT-3's guard: every document holding a counted n-gram is dropped.
    assert (found["mode"], found["max_docs"], found["cut"]) == ("document", 10, 0)
    assert found["dropped"] == found["documents"]
    assert found["too_short"]["pubmedqa"]["test"] == 500 - found["checked"]["pubmedqa"]["test"]


def test_report_lists_the_examples_found(decontaminated) -> None:
    md = decontaminated["report"].with_suffix(".md").read_text()
    assert "Decontamination: documents sharing a 13-word n-gram" in md
    assert "n-grams in more than 10 corpus documents ignored as boilerplate" in md
    assert "kept whole for sharing only boilerplate" in md and "Too short to check" in md
    assert "Corpus cut-off: none" in md
    # The report counts them and links the list, written next to it.
    assert "[contamination.csv](contamination.csv)" in md
    listed = (decontaminated["report"].parent / "contamination.csv").read_text()
    for doc_id, (task, split, ex_id) in decontaminated["hidden"].items():
        assert f"{task},{split},{ex_id}," in listed and doc_id in listed
