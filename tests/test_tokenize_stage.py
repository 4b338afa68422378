"""The vocab and tokenize stages: document shards in, tokenizer and token shards out.

Document shards are made here from the mirror's real abstracts (corpus JSONL) in the filter
stage's schema, placed where the plan expects the filter output. The Prefect flow test is marked
slow (harness and worker-process start-up dominate on a loaded 2-core machine).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.registry import plan
from mediswift.artifacts import Artifact, unit_artifact
from mediswift.config import PipelineConfig, load_recipe
from mediswift.text.moses import moses_detokenize, moses_tokenize
from mediswift.text.token_shards import read_token_docs, tokenize_unit
from mediswift.text.tokenizer import Tokenizer, document_text
from mediswift.text.vocab import build_vocab

# A word only validation documents contain: it must never become a piece.
VALIDATION_ONLY = "zqxjvk"
OVERRIDES = {"vocab": {"vocab_size": 1000, "sample_sentences": 20_000}, "tokenize": {"workers": 2}}


def write_filter_output(
    mirror_dir: Path, art: Artifact, home: Path, n_docs: int = 600, n_shards: int = 3
) -> list[Path]:
    """Document shards of real abstracts (every 10th in validation) + a filter manifest."""
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n_docs), f, strict=False)]
    art.ensure()
    paths, entries = [], []
    for k in range(n_shards):
        part = rows[k::n_shards]
        split = ["validation" if i % 10 == 0 else "train" for i in range(len(part))]
        text = [
            r["text"] + (f" {VALIDATION_ONLY}" * 50 if s == "validation" else "")
            for r, s in zip(part, split, strict=True)
        ]
        n = len(part)
        table = pa.table(
            {
                "doc_id": [r["id"] for r in part],
                "source": ["corpus:biomed_text"] * n,
                "pmid": [None] * n,
                "pmcid": [None] * n,
                "title": [r.get("title") or "" for r in part],
                "text": text,
                "year": pa.array([None] * n, pa.int32()),
                "split": split,
            }
        )
        path = art.path / f"shard-{k:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
        entries.append(
            {
                "path": str(path.relative_to(home)),
                "n_docs": n,
                "n_train": split.count("train"),
                "n_validation": split.count("validation"),
            }
        )
    art.write_manifest({"shards": entries, "counts": {"input": n_docs}})
    return paths


def config() -> PipelineConfig:
    return load_recipe("demo", OVERRIDES)


@pytest.fixture(scope="module")
def vocab_home(tmp_path_factory: pytest.TempPathFactory, mirror_dir: Path):
    """A home with filter output and a learned vocabulary (library calls, no Prefect)."""
    home = tmp_path_factory.mktemp("home")
    arts = plan(config(), home)
    shards = write_filter_output(mirror_dir, arts["filter"], home)
    manifest = build_vocab(
        shards,
        arts["vocab"].ensure().path,
        vocab_size=1000,
        sample_sentences=20_000,
        seed=0,
        character_coverage=0.9999,
    )
    arts["vocab"].write_manifest(manifest)
    return home, arts, shards, manifest


def test_vocab_learned_on_train_only(vocab_home) -> None:
    home, arts, _, manifest = vocab_home
    tok = Tokenizer.load(arts["vocab"].path)
    assert manifest["vocab_size"] == tok.vocab_size == 1000
    assert manifest["hash"] == tok.hash
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert 0.0 <= manifest["unk_rate_validation"] < 0.01
    assert manifest["train_docs"] == 540  # 600 documents, every 10th of each shard held out
    # The validation-only word is frequent there but never seen in learning.
    pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    assert f"▁{VALIDATION_ONLY}" not in pieces and VALIDATION_ONLY not in pieces


def _tokenize_all(home: Path, arts, shards: list[Path], workers: int) -> list[dict]:
    vocab = arts["vocab"]
    units = [
        unit_artifact(home, "tokenize", 1, arts["filter"].key, s.name, vocab.manifest()["hash"])
        for s in shards
    ]
    if workers == 1:
        return [tokenize_unit(s, vocab.path, u, home) for s, u in zip(shards, units, strict=True)]
    with ProcessPoolExecutor(workers) as pool:
        futs = [
            pool.submit(tokenize_unit, s, vocab.path, u, home)
            for s, u in zip(shards, units, strict=True)
        ]
        return [f.result() for f in futs]


def digests(home: Path, results: list[dict]) -> dict[str, str]:
    return {
        s["path"]: hashlib.sha256((home / s["path"]).read_bytes()).hexdigest()
        for r in results
        for s in r["shards"]
    }


@pytest.mark.subprocess
def test_vocab_same_with_two_moses_processes(vocab_home, tmp_path: Path) -> None:
    _, arts, shards, manifest = vocab_home
    again = build_vocab(
        shards,
        tmp_path,
        vocab_size=1000,
        sample_sentences=20_000,
        seed=0,
        character_coverage=0.9999,
        workers=2,
    )
    assert again == manifest
    assert (tmp_path / "bpe.model").read_bytes() == (arts["vocab"].path / "bpe.model").read_bytes()


@pytest.mark.subprocess
def test_token_shards_deterministic_and_correct(vocab_home, tmp_path: Path) -> None:
    home, arts, shards, manifest = vocab_home
    serial = _tokenize_all(home, arts, shards, workers=1)
    # Same input, other home, two worker processes: the same bytes.
    other = tmp_path / "other"
    for name in ("filter", "vocab"):
        src = arts[name].path
        dst = other / src.relative_to(home)
        dst.mkdir(parents=True)
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
    other_arts = plan(config(), other)
    other_shards = [other / p.relative_to(home) for p in shards]
    pooled = _tokenize_all(other, other_arts, other_shards, workers=2)
    assert digests(home, serial) == digests(other, pooled)

    tok = Tokenizer.load(arts["vocab"].path)
    splits = {s["split"] for r in serial for s in r["shards"]}
    assert splits == {"train", "validation"}
    first = serial[0]["shards"][0]
    path = home / first["path"]
    schema = pq.read_schema(path)
    assert schema.field("input_ids").type == pa.list_(pa.uint16())
    assert pq.ParquetFile(path).metadata.row_group(0).column(1).compression == "ZSTD"
    doc_ids, ids = read_token_docs(path)
    assert len(doc_ids) == first["n_docs"] and sum(map(len, ids)) == first["n_tokens"]
    table = pq.read_table(shards[0]).to_pylist()
    by_id = {r["doc_id"]: r for r in table}
    for doc_id, seq in zip(doc_ids[:20], ids[:20], strict=True):
        assert seq[-1] == tok.eos_id and tok.eos_id not in seq[:-1]
        r = by_id[doc_id]
        text = document_text(r["title"], r["text"])
        assert tok.decode(seq) == moses_detokenize(moses_tokenize(text))


def test_half_written_shard_never_counted(vocab_home, tmp_path: Path) -> None:
    home, arts, shards, _ = vocab_home
    unit = unit_artifact(home, "tokenize", "crash-test", shards[1].name)
    unit.ensure()
    (unit.path / f".{shards[1].stem}.train.tokens.parquet.123.tmp").write_bytes(b"PAR1 partial")
    assert not unit.done()
    result = tokenize_unit(shards[1], arts["vocab"].path, unit, home)
    assert unit.done()
    listed = {Path(s["path"]).name for s in result["shards"]}
    assert all(not n.startswith(".") for n in listed)
    # A done unit is not redone: same manifest, files untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in unit.path.iterdir()}
    assert tokenize_unit(shards[1], arts["vocab"].path, unit, home) == result
    assert mtimes == {p: p.stat().st_mtime_ns for p in unit.path.iterdir()}


def test_vocab_size_change_rekeys_vocab_and_tokenize_only(tmp_path: Path) -> None:
    a = plan(config(), tmp_path)
    b = plan(load_recipe("demo", {**OVERRIDES, "vocab": {"vocab_size": 1200}}), tmp_path)
    assert all(a[s].key == b[s].key for s in ("download", "parse", "filter"))
    assert all(a[s].key != b[s].key for s in ("vocab", "tokenize"))
    # The worker count is not content: a different count re-keys the stage output but the
    # content-addressed units (filter key, shard, tokenizer hash) stay the same.
    c = plan(load_recipe("demo", {**OVERRIDES, "tokenize": {"workers": 1}}), tmp_path)
    assert c["vocab"].key == a["vocab"].key


# ---- the stages inside Prefect flows ---------------------------------------------------------


def _run_pipeline(home: Path, workers: int) -> dict:
    from flows.pipeline import mediswift

    extra = {**OVERRIDES, "tokenize": {"workers": workers}}
    return mediswift(
        recipe="demo", stages=["vocab", "tokenize"], home=str(home), overrides={"extra": extra}
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".parquet", ".model", ".json") and "prefect" not in str(p)
    }


@pytest.mark.slow
def test_stages_in_flow(prefect_harness, mirror_dir: Path, tmp_path: Path) -> None:
    homes = [tmp_path / "two-workers", tmp_path / "one-worker"]
    for home in homes:
        write_filter_output(mirror_dir, plan(config(), home)["filter"], home, 300, 3)
    _run_pipeline(homes[0], workers=2)
    arts = plan(config(), homes[0])
    vocab, tokenize = arts["vocab"].manifest(), arts["tokenize"].manifest()
    assert vocab["vocab_size"] == 1000 and "unk_rate_validation" in vocab
    assert Tokenizer.load(arts["vocab"].path).hash == vocab["hash"] == tokenize["tokenizer_hash"]
    assert {s["split"] for s in tokenize["shards"]} == {"train", "validation"}
    for split in ("train", "validation"):
        total = sum(s["n_tokens"] for s in tokenize["shards"] if s["split"] == split)
        assert tokenize["tokens"][split] == total > 0
    assert all((homes[0] / s["path"]).is_file() for s in tokenize["shards"])

    # Second run: nothing to do, nothing rewritten.
    before = {p: p.stat().st_mtime_ns for p in (homes[0] / "tokenize").rglob("*") if p.is_file()}
    before |= {p: p.stat().st_mtime_ns for p in arts["vocab"].path.iterdir()}
    _run_pipeline(homes[0], workers=2)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after

    # One worker, another home: byte-identical tokenizer and token shards.
    _run_pipeline(homes[1], workers=1)
    one = plan(load_recipe("demo", {**OVERRIDES, "tokenize": {"workers": 1}}), homes[1])
    a, b = _files(homes[0] / "tokenize" / "units"), _files(homes[1] / "tokenize" / "units")
    assert a and a == b
    assert (arts["vocab"].path / "bpe.model").read_bytes() == (
        one["vocab"].path / "bpe.model"
    ).read_bytes()


def test_task_runner_choice() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.stages.tokenize import task_runner
    from mediswift.config import TokenizeConfig

    local = task_runner(TokenizeConfig(workers=3))
    assert isinstance(local, ProcessPoolTaskRunner) and local._max_workers == 3
    alone = task_runner(TokenizeConfig(workers=1))  # no process of its own for one worker
    assert isinstance(alone, ThreadPoolTaskRunner) and alone._max_workers == 1
    cluster = task_runner(TokenizeConfig(dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(cluster, DaskTaskRunner)
    assert cluster.address == "tcp://127.0.0.1:8786"
