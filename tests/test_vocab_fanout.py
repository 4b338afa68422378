"""The vocab stage's Moses pass fanned out: one unit per document shard on the executor, then
BPE on all of them. The tokenizer files are byte-identical to the single-node path
(`build_vocab`, as the stage made them before), with one worker or two, after a crash, and on a
Dask cluster; finished units are not redone and a damaged Moses file is made again.

Document shards are made here from the mirror's real abstracts in the filter stage's schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FilterManifest
from mediswift.stages import vocab as S
from mediswift.text.moses import moses_tokenize
from mediswift.text.tokenizer import document_text
from mediswift.text.vocab import MOSES_SCHEMA, build_vocab, read_moses_file

VOCAB = {"vocab_size": 1000, "sample_sentences": 20_000, "seed": 0, "character_coverage": 0.9999}
TOKENIZER_FILES = ("bpe.model", "tokenizer.json")


def write_filter_output(mirror_dir: Path, home: Path, n_docs: int = 480) -> Artifact:
    """Four document shards of real abstracts (every 10th in validation; the last shard holds
    validation documents only, so its Moses file has no rows) + a filter manifest."""
    with open(mirror_dir / "corpus" / "biomed_text.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n_docs), f, strict=False)]
    art = Artifact("filter", "f", home / "filter" / "f").ensure()
    parts = [rows[k : n_docs - 30 : 3] for k in range(3)] + [rows[n_docs - 30 :]]
    entries = []
    for k, part in enumerate(parts):
        split = ["validation" if k == 3 or i % 10 == 0 else "train" for i in range(len(part))]
        n = len(part)
        table = pa.table(
            {
                "doc_id": [r["id"] for r in part],
                "source": ["corpus:biomed_text"] * n,
                "pmid": [None] * n,
                "pmcid": [None] * n,
                "title": [r.get("title") or "" for r in part],
                "text": [r["text"] for r in part],
                "year": pa.array([None] * n, pa.int32()),
                "split": split,
            }
        )
        path = art.path / f"shard-{k:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        entries.append({"path": str(path.relative_to(home)), "n_docs": n})
    art.write_manifest({"shards": entries, "counts": {"input": n_docs}})
    return art


def config(workers: int = 1, executor: dict | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"vocab": {**VOCAB, "workers": workers}, **({"executor": executor} if executor else {})}
    )


def filtered(home: Path) -> FilterManifest:
    return FilterManifest.model_validate(Artifact("filter", "f", home / "filter" / "f").manifest())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, mirror_dir: Path):
    """The vocabulary of the single-node path (`build_vocab`, the stage's function before the
    Moses pass fanned out) on the same shards: its files and its result."""
    home = tmp_path_factory.mktemp("reference")
    filt = write_filter_output(mirror_dir, home)
    out = home / "vocab"
    shards = [home / s["path"] for s in filt.manifest()["shards"]]
    result = build_vocab(shards, out, **VOCAB)
    return {n: (out / n).read_bytes() for n in TOKENIZER_FILES}, json.loads(json.dumps(result))


def test_moses_units_then_bpe_equal_the_single_node_path(
    reference, mirror_dir: Path, tmp_path: Path
) -> None:
    files, result = reference
    write_filter_output(mirror_dir, tmp_path)
    specs = S.moses_units(tmp_path, filtered(tmp_path))
    assert [s.name for s in specs] == [f"{i:04d}-shard-{i:05d}" for i in range(4)]
    moses = [S.run_moses(s, tmp_path) for s in reversed(specs)][::-1]  # any order will do
    assert [m.n_docs for m in moses] == [135, 135, 135, 0]
    first = pq.read_table(tmp_path / specs[0].doc_shard).to_pylist()[1]  # [0] is validation
    assert next(read_moses_file(tmp_path / moses[0].path)) == moses_tokenize(
        document_text(first["title"], first["text"])
    )
    assert pq.read_schema(tmp_path / moses[3].path) == MOSES_SCHEMA
    spec = S.bpe_unit(config().vocab, specs)
    learned = S.run_bpe(spec, tmp_path)
    out = Artifact("vocab", "v", tmp_path / "vocab" / "v")
    manifest = S.collect(tmp_path, spec, learned, out)
    assert {n: (out.path / n).read_bytes() for n in TOKENIZER_FILES} == files
    assert manifest.model_dump(mode="json", exclude={"stage", "key"}) == result


def test_keys_follow_what_each_unit_reads(tmp_path: Path) -> None:
    shards = [S.moses_spec("filter/f/a.parquet"), S.moses_spec("filter/f/b.parquet")]
    bpe = S.bpe_unit(config().vocab, shards)
    # Workers only schedule: nothing re-keys.
    assert S.bpe_unit(config(workers=7).vocab, shards).key == bpe.key
    bigger = config().vocab.model_copy(update={"vocab_size": 1200})
    assert S.bpe_unit(bigger, shards).key != bpe.key
    assert S.moses_spec("filter/f/a.parquet", name="0001-a").key == shards[0].key
    assert S.bpe_unit(config().vocab, shards[:1]).key != bpe.key
    assert len({s.key for s in shards}) == 2


def test_a_damaged_moses_file_is_made_again(mirror_dir: Path, tmp_path: Path) -> None:
    write_filter_output(mirror_dir, tmp_path)
    spec = S.moses_units(tmp_path, filtered(tmp_path))[0]
    done = S.run_moses(spec, tmp_path)
    path = tmp_path / done.path
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped, same size
    assert S.verified_moses_file(spec, tmp_path) == path
    assert path.read_bytes() == good
    assert (tmp_path / "quarantine" / done.path).read_bytes() != good
    path.unlink()  # missing: made again too
    assert S.verified_moses_file(spec, tmp_path) == path and path.read_bytes() == good


def test_task_runner_choice() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.stages.vocab import task_runner

    local = task_runner(2)
    assert isinstance(local, ProcessPoolTaskRunner) and local._max_workers == 2
    alone = task_runner(1)  # no process of its own for one worker
    assert isinstance(alone, ThreadPoolTaskRunner) and alone._max_workers == 1
    cluster = task_runner(
        2, config(executor={"kind": "dask", "address": "tcp://1.2.3.4:8786"}).executor
    )
    assert isinstance(cluster, DaskTaskRunner) and cluster.address == "tcp://1.2.3.4:8786"


# ---- the stage inside a Prefect flow, on the executor ----------------------------------------


def _run_stage(home: Path, workers: int, executor: dict | None = None) -> dict:
    from prefect import flow

    from flows.stages import vocab as stage

    @flow(name="vocab-stage-test")
    def vocab_stage(home: str) -> dict:
        root = Path(home)
        inputs = {"filter": Artifact("filter", "f", root / "filter" / "f")}
        out = Artifact("vocab", "v", root / "vocab" / "v")
        return stage.run(config(workers, executor), root, out, inputs)

    return vocab_stage(str(home))


def _unit_files(home: Path) -> dict[str, int]:
    """Every file of the vocab units: path -> modification time."""
    return {
        str(p.relative_to(home)): p.stat().st_mtime_ns
        for p in sorted((home / "vocab" / "units").rglob("*"))
        if p.is_file()
    }


def _tokenizer(home: Path) -> dict[str, bytes]:
    return {n: (home / "vocab" / "v" / n).read_bytes() for n in TOKENIZER_FILES}


@pytest.mark.subprocess
def test_two_workers_equal_one_and_the_single_node_path(
    prefect_harness, reference, mirror_dir: Path, tmp_path: Path
) -> None:
    files, result = reference
    one, two = tmp_path / "one", tmp_path / "two"
    for home in (one, two):
        write_filter_output(mirror_dir, home)
    # A crashed earlier run: one Moses unit finished, another cut short (no manifest).
    specs = S.moses_units(two, filtered(two))
    S.run_moses(specs[0], two)
    half = specs[1].artifact(two).ensure().path
    (half / "moses.parquet").write_bytes(b"PAR1 cut short")
    before = _unit_files(two)

    manifest = _run_stage(two, workers=2)
    assert {k: v for k, v in manifest.items() if k not in ("stage", "key")} == result
    assert _tokenizer(two) == files
    after = _unit_files(two)
    kept = [p for p in before if p.startswith(str(specs[0].artifact(two).path.relative_to(two)))]
    assert kept and all(after[p] == before[p] for p in kept)  # the finished unit was not redone
    assert len([p for p in after if p.endswith("moses.parquet")]) == 4

    _run_stage(one, workers=1)
    assert _tokenizer(one) == files
    # A re-run redoes no unit.
    _run_stage(two, workers=2)
    assert _unit_files(two) == after


@pytest.mark.slow
def test_moses_units_on_a_dask_cluster(
    prefect_harness, reference, mirror_dir: Path, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    files, _ = reference
    write_filter_output(mirror_dir, tmp_path)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        _run_stage(tmp_path, 2, {"kind": "dask", "address": cluster.scheduler_address})
        ran = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert ran >= 3 * 4  # the four Moses tasks went through the cluster's scheduler
    assert _tokenizer(tmp_path) == files
