"""The key rule, for every stage: a `result` setting changes the key of exactly the units that
read it (and the key of its own stage); a `schedule` setting changes no key at all.

The units are planned on fixed inputs (what the previous stage would have listed), so a key
changes only through what the unit itself reads, or through a unit of the same stage it reads
(a filter shard reads the merge's codes). `READS` is the independent statement of which unit
kinds read which setting: a setting left out of a unit's spec fails here.
"""

from __future__ import annotations

import typing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flows.registry import plan as stage_plan
from mediswift.artifacts import Artifact, content_key
from mediswift.config import PipelineConfig
from mediswift.data.pmc_files import PmcArticle
from mediswift.data.pubmed_files import PubmedFile
from mediswift.finetune import keys as finetune_keys
from mediswift.manifests import (
    DownloadManifest,
    FilterManifest,
    TokenizeManifest,
    TrackingSpec,
    TrainedVariant,
    VocabManifest,
)
from mediswift.settings import Section, role_of
from mediswift.stages import download, parse, pretrain, tokenize
from mediswift.stages import filter as filt
from mediswift.stages import filter_contamination as contam
from mediswift.stages import vocab as vocab_stage
from mediswift.units import FileRef

# The boilerplate guard's counts read the merge's codes too (what is kept is what is counted).
GUARD = {"filter:ngram-counts", "filter:frequent-ngrams"}
SCAN_MERGE_SHARD = {"filter:scan", "filter:merge", "filter:shard", *GUARD}
POINTS = {"finetune:point"}
# What the listing decides (which files exist) re-keys the stage, not a unit: the listing's
# output is an input here.
LISTING: set[str] = set()

# (section, setting) -> the unit kinds whose keys it must change, and no other.
READS: dict[tuple[str, str], set[str]] = {
    ("download", "pubmed_url"): {"download:pubmed"},
    ("download", "pubmed_max_files"): LISTING,
    ("download", "pubmed_include_updates"): LISTING,
    ("download", "pubmed_max_update_files"): LISTING,
    ("download", "pmc_url"): {"download:pmc"},
    ("download", "pmc_max_articles"): LISTING,
    ("download", "pmc_commercial_only"): LISTING,
    ("download", "extra_corpora"): {"download:corpus"},
    ("parse", "rows_per_shard"): {"parse:pubmed", "parse:pmc", "parse:corpus"},
    ("parse", "pmc_articles_per_shard"): {"parse:pmc"},
    ("filter", "min_abstract_chars"): SCAN_MERGE_SHARD,
    ("filter", "languages"): SCAN_MERGE_SHARD,
    ("filter", "max_year"): SCAN_MERGE_SHARD,
    ("filter", "pmc_overlap"): {"filter:merge", "filter:shard", *GUARD},
    ("filter", "max_revised"): SCAN_MERGE_SHARD,
    ("filter", "pmc_overlap_rule"): {"filter:merge", "filter:shard", *GUARD},
    ("filter", "validation_fraction"): {"filter:shard"},
    ("filter", "split_salt"): {"filter:shard"},
    ("filter", "decontaminate"): {"filter:shard"},
    ("filter", "contamination_ngram"): {"filter:contamination-index", "filter:shard", *GUARD},
    ("filter", "decontaminate_mode"): {"filter:shard"},
    ("filter", "contamination_max_docs"): {"filter:frequent-ngrams", "filter:shard"},
    # the BPE unit learns the vocabulary; the Moses units read no vocab setting
    **{
        ("vocab", n): {"vocab:bpe"}
        for n in ("vocab_size", "sample_sentences", "seed", "character_coverage")
    },
}
for _name in PipelineConfig().pretrain.result_settings():
    READS[("pretrain", _name)] = {"pretrain:variant"}
for _name in PipelineConfig().finetune.result_settings():
    READS[("finetune", _name)] = POINTS  # training settings never re-prepare a task's data


class Together(dict):
    """A change that needs another setting to stay valid (both are applied)."""


# New values for settings the generic rule below cannot change on its own.
NEW_VALUES: dict[tuple[str, str], Any] = {
    ("pretrain", "nnodes"): Together(nnodes=2, rdzv_endpoint="127.0.0.1:29500"),
    ("download", "pubmed_max_files"): 1,
    ("download", "pubmed_max_update_files"): 1,
    ("download", "pmc_max_articles"): 1,
    ("download", "extra_corpora"): ["https://example.org/other.jsonl"],
    ("parse", "pmc_articles_per_shard"): 2,
    ("filter", "languages"): ["eng"],
    ("filter", "max_year"): 2020,
    ("filter", "max_revised"): "2023-01-01",
    ("filter", "pmc_overlap_rule"): "any_pmcid",
    ("filter", "decontaminate"): False,
    ("tokenize", "dask_address"): "tcp://127.0.0.1:8786",
    ("pretrain", "model"): "small",
    ("pretrain", "seq_len"): 512,
    ("pretrain", "micro_batch"): 4,
    ("pretrain", "global_batch"): 1024,
    ("pretrain", "device"): "cpu",
    ("pretrain", "rdzv_endpoint"): "127.0.0.1:29500",
    ("pretrain", "torch_threads"): 1,
    ("pretrain", "sparsity_levels"): [0.0, 0.5],
    ("pretrain", "arms"): [{"model": "tiny", "sparsity": 0.0}, {"model": "tiny", "sparsity": 0.5}],
    ("pretrain", "seeds"): [0, 1],
    ("pretrain", "betas"): (0.8, 0.95),
    ("finetune", "betas"): (0.8, 0.95),
    ("finetune", "device"): "cpu",
    ("finetune", "torch_threads"): 1,
    ("finetune", "seeds"): [0, 1],
    ("pretrain", "rdzv_id"): "job-2",
    **{(t, n): 5 for t in ("pubmedqa", "hoc") for n in ("max_train_examples", "max_eval_examples")},
    ("pubmedqa", "pqa_a_url"): "https://example.org/pqa_a.parquet",
    ("pubmedqa", "pqa_u_url"): "https://example.org/pqa_u.parquet",
    ("pubmedqa", "pqal_fold"): 1,
}


def new_value(section: Section, name: str, key: tuple[str, str]) -> Any:
    if key in NEW_VALUES:
        return NEW_VALUES[key]
    value = getattr(section, name)
    annotation = type(section).model_fields[name].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return next(c for c in typing.get_args(annotation) if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value else 0.25
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"give {key} a new value in NEW_VALUES (it is {value!r})")


def changed(section: Section, name: str, value: Any) -> Section:
    update = value if isinstance(value, Together) else {name: value}
    return type(section).model_validate({**section.model_dump(), **update})


def base_config() -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "download": {"extra_corpora": ["https://example.org/corpus.jsonl"]},
            "filter": {"decontaminate": True},
            "pretrain": {"sparsity_levels": [0.0, 0.5, 0.75]},
            "finetune": {"tasks": ["pubmedqa", "hoc"]},
        }
    )


def touch(home: Path, rel: str, text: str = "x") -> str:
    (home / rel).parent.mkdir(parents=True, exist_ok=True)
    (home / rel).write_text(text)
    return rel


def unit_keys(cfg: PipelineConfig, home: Path) -> dict[str, str]:
    """Every unit of every stage, planned on fixed inputs: id -> key."""
    keys: dict[str, str] = {}

    def add(specs: list[Any], ids: list[str] | None = None) -> None:
        seen: dict[str, int] = {}
        for i, s in enumerate(specs):
            kind = f"{s.stage}:{s.kind}"
            n = seen[kind] = seen.get(kind, -1) + 1
            keys[ids[i] if ids else f"{kind}:{n}"] = s.key

    d = cfg.download
    base = cfg.resolve(d.pubmed_url)
    files = [
        {"name": f"pubmed26n000{i}.xml.gz", "kind": "baseline", "url": f"{base}baseline/x{i}"}
        for i in (1, 2)
    ]
    articles = [
        {"folder": f"PMC{i}.1", "pmcid": f"PMC{i}", "pmid": str(i), "license": "CC BY",
         "xml_key": f"PMC{i}.1/PMC{i}.1.xml", "md5": "0" * 32}
        for i in (1, 2, 3)
    ]  # fmt: skip
    add(download.units(d, cfg.resolve, cfg.mirror, [PubmedFile(**f) for f in files],
                       [PmcArticle(**a) for a in articles]))  # fmt: skip

    listed = DownloadManifest.model_construct(
        pubmed=[{"path": f"raw/pubmed/baseline/{f['name']}", "md5": str(i) * 32}
                for i, f in enumerate(files)],
        pmc=[{"path": f"raw/pmc/{a['xml_key']}", "md5": a["md5"], "pmcid": a["pmcid"],
              "pmid": a["pmid"], "license": a["license"]} for a in articles],
        corpora=[{"path": touch(home, "raw/corpus/c.jsonl"), "name": "c"}],
    )  # fmt: skip
    add(parse.units(cfg.parse, listed, home))

    parsed = [
        filt.ParsedShard(path=touch(home, f"parse/units/p{i}/docs.parquet"), source=src)
        for i, src in enumerate(("pubmed", "pmc"))
    ]
    index = None
    if cfg.filter.decontaminate:
        files_ = {t: {"data": touch(home, f"raw/{t}/data.json", t)} for t in cfg.finetune.tasks}
        spec = contam.index_unit(cfg.filter, cfg.finetune.tasks, files_, home)
        add([spec])
        index = contam.IndexResult.model_construct(
            path=str(spec.artifact(home).path.relative_to(home)), digest=spec.key
        )
    scan_specs = filt.scan_units(cfg.filter, parsed)
    add(scan_specs)
    scans = [
        filt.ScanResult.model_construct(path=f"{s.artifact(home).path.relative_to(home)}/scan.npz")
        for s in scan_specs
    ]
    merge = filt.merge_unit(cfg.filter, parsed, scans)
    add([merge])
    # Codes computed from what the merge reads: they change when its key does.
    merged = filt.MergeResult.model_construct(
        plans=[FileRef(path=f"m/{i}.npy", digest=content_key(merge.key, i)) for i in (0, 1)]
    )
    counts = filt.count_units(cfg.filter, parsed, merged, index)
    add(counts)
    # Counts computed from what each count unit reads: they change when its key does.
    counted = [
        contam.CountResult.model_construct(path=f"c/{i}.npz", digest=c.key)
        for i, c in enumerate(counts)
    ]
    frequent = None
    if (spec := contam.frequent_unit(cfg.filter, counted)) is not None:
        add([spec])
        frequent = contam.FrequentResult.model_construct(path="f.npy", digest=spec.key)
    add(filt.shard_units(cfg.filter, parsed, merged, index, frequent))

    filtered = FilterManifest.model_construct(shards=[{"path": p.path} for p in parsed])
    moses = vocab_stage.moses_units(home, filtered)
    add(moses)
    add([vocab_stage.bpe_unit(cfg.vocab, moses)])
    vocab_art = Artifact("vocab", "v", home / "vocab" / "v")
    vocab_art.ensure().write_manifest({"hash": "tokenizer-hash", "vocab_size": 100})
    vocab = VocabManifest(hash="tokenizer-hash", vocab_size=100)
    add(tokenize.units(home, filtered, vocab_art.path, vocab))

    tokens = Artifact("tokenize", "tokens", home / "tokenize" / "tokens")
    token_manifest = TokenizeManifest.model_construct(shards=[], vocab_size=100)
    nth: Counter[tuple] = Counter()  # by level and seed position: a plan setting adds units
    for v in pretrain.units(cfg, home, tokens, token_manifest):
        level = (v.spec.sparsity, v.iso_flops_of)
        keys[f"pretrain:variant:{level}:{nth[level]}"] = v.spec.key
        nth[level] += 1

    fc = cfg.finetune
    data = {
        t: finetune_keys.data_spec(fc, home, t, {"data": f"raw/{t}/data.json"}, vocab_art)
        for t in fc.tasks
    }
    for t, (_, unit) in data.items():
        keys[f"finetune:data:{t}"] = unit.key
    variant = TrainedVariant.model_construct(name="tiny-s0", checkpoint="pretrain/units/k/final")
    tracking = TrackingSpec(uri=None, experiment="e")
    for p in finetune_keys.sweep_units(fc, home, [variant], data, vocab_art, tracking):
        for spec, _ in p.points:
            keys[f"finetune:point:{p.task}:b{spec.batch_size}-lr{spec.lr}-s{spec.seed}"] = spec.key
    return keys


def stage_keys(cfg: PipelineConfig, home: Path) -> dict[str, str]:
    return {s: a.key for s, a in stage_plan(cfg, home).items()}


def kinds_changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {
        ":".join(u.split(":")[:2]) for u in before.keys() & after.keys() if before[u] != after[u]
    }


SECTIONS = ("download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune")
SETTINGS = [
    (sec, name, role_of(type(getattr(PipelineConfig(), sec)), name))
    for sec in SECTIONS
    for name in type(getattr(PipelineConfig(), sec)).model_fields
    if name != "tasks"
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    cfg = base_config()
    return home, unit_keys(cfg, home), stage_keys(cfg, home)


@pytest.mark.parametrize(
    ("section", "name", "role"), SETTINGS, ids=[f"{s}.{n}" for s, n, _ in SETTINGS]
)
def test_a_setting_re_keys_exactly_the_units_that_read_it(reference, section, name, role):
    home, before, before_stages = reference
    cfg = base_config()
    sec = getattr(cfg, section)
    new = changed(sec, name, new_value(sec, name, (section, name)))
    after_cfg = cfg.model_copy(update={section: new})
    after, after_stages = unit_keys(after_cfg, home), stage_keys(after_cfg, home)
    if role == "result":
        assert (section, name) in READS, f"say in READS which units read {section}.{name}"
        assert kinds_changed(before, after) == READS[(section, name)]
        assert after_stages[section] != before_stages[section]
    elif role == "plan":  # which units exist: the stage key, never a unit's key
        assert kinds_changed(before, after) == set()
        assert after_stages[section] != before_stages[section]
    else:
        assert kinds_changed(before, after) == set()
        assert after_stages == before_stages


TASK_SETTINGS = [
    (task, name)
    for task in ("pubmedqa", "hoc")
    for name in PipelineConfig.model_validate({"finetune": {"tasks": [task]}})
    .finetune.tasks[task]
    .result_settings()
]


@pytest.mark.parametrize(
    ("task", "name"), TASK_SETTINGS, ids=[f"{t}.{n}" for t, n in TASK_SETTINGS]
)
def test_a_task_setting_re_keys_that_task_only(reference, task, name):
    home, before, _ = reference
    cfg = base_config()
    settings = cfg.finetune.tasks[task]
    new = changed(settings, name, new_value(settings, name, (task, name)))
    tasks = {**cfg.finetune.tasks, task: new}
    after_cfg = cfg.model_copy(
        update={"finetune": cfg.finetune.model_copy(update={"tasks": tasks})}
    )
    after = unit_keys(after_cfg, home)
    moved = {u for u in before.keys() & after.keys() if before[u] != after[u]}
    assert moved, f"finetune.tasks.{task}.{name} re-keys no unit"
    assert all(task in u.split(":") or u.startswith("filter:") for u in moved), moved
    assert f"finetune:data:{task}" in moved
    assert any(u.startswith(f"finetune:point:{task}:") for u in moved)
