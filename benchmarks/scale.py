"""A scale rehearsal of the data stages: the full corpus's shape, sampled, measured, extrapolated.

    .venv/bin/python benchmarks/scale.py [--cores 32] [--workers 8] [--worker-cores 16]
        [--rtt-ms 30] [--ncbi-mbps 50] [--filter-rows 1000000 3000000]
        [--vocab-workers 1 2] [--vocab-shards 8] [--vocab-copies 4]

The full corpus (defaults; each a flag): 1,334 PubMed baseline files holding 36M records, 44%
with an abstract (15.7M abstracts kept of 36M, the paper's Table 1), abstracts ~1,300
characters; 5M PMC articles (8M versions in the bucket's listing) of ~28,000 characters. Nothing
that size is made: each stage's own library function runs on generated samples at realistic
sizes (sentences of the mirror's real abstracts when it is there, drawn to log-normal lengths;
PubMed records with authors, MeSH and references; JATS articles with sections, a licence and
references), in its own process, and what a core does per item is scaled to the counts:

  download  PubMed files: bytes / --ncbi-mbps. PMC: the bucket imitation of `pmc_listing.py`
            (listing pages, metadata GETs at 32 connections, cold and from the stores) and the
            article XML fetched over loopback with the stage's 3 connections (md5, fsync,
            rename each), each rate capped by connections / --rtt-ms for the real network.
  parse     `parse_pubmed_file` on one generated file; `parse_pmc_batch` on generated articles.
  filter    the global plan (`plan_filter`: revisions, deletions, duplicates over every id) on
            thin generated shards of --filter-rows rows, peak RSS and time fitted linearly to
            the corpus's rows; the per-shard pass (`apply_plan`) on the parsed samples.
  vocab     the Moses units (`moses_shard`, one per document shard) on the filtered samples;
            the BPE unit's pass over their files (sha256, read back, cut into the trainer's
            lines on disk, as `learn_bpe` does before it samples); sentencepiece BPE learning
            at two sample sizes, fitted to the 2M lines the recipes sample (a rough line: the
            trainer is not linear); the unknown rate on the validation split (3% of documents,
            Moses + BPE in one process) at the tokenize rate. And the stage itself
            (`flows.stages.vocab`) run with each of --vocab-workers in turn, same run, on the
            samples' documents (--vocab-copies times over, in --vocab-shards shards).
  tokenize  `tokenize_unit` on the filtered samples (a BPE of 8,000 learned on them).
  tasks     Prefect's cost per task: --tasks trivial tasks through a temporary server, timed
            inside the flow, each one already done ("Cached", as every re-run is) and each run.

Wall time on one node of --cores cores and on --workers Dask workers of --worker-cores each,
both running the unit tasks as processes (on the node: the executor on a local Dask cluster):
the stage's core-seconds over the processes it can use, or the orchestration (tasks x cost per
task, in the flow's thread, overlapping the work), whichever is longer; the filter's plan and
the vocab's BPE unit run in one process. Per-core rates are CPU seconds of one process (the
machine is shared: CPU time is disturbed far less than wall time). The run takes ~3 minutes.
"""

# ruff: noqa: E402  (the import path is fixed up first, see below)
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MIRROR = Path(os.environ.get("MEDISWIFT_SHARED", REPO.parent / "shared")) / "mirror"


@dataclass(frozen=True)
class Shape:
    """The full corpus, as the paper and the upstreams give it."""

    pubmed_files: int = 1_334
    pubmed_records: int = 36_000_000
    abstract_fraction: float = 0.44
    abstract_chars: int = 1_300
    pubmed_gz_mb: float = 25.0  # a baseline file, compressed
    pmc_articles: int = 5_000_000
    pmc_versions: int = 8_000_000
    pmc_text_chars: int = 28_000
    pmc_xml_kb: float = 100.0  # an article's JATS file
    rows_per_shard: int = 50_000
    pmc_per_shard: int = 1_000
    pmc_batch: int = 50
    bpe_lines: int = 2_000_000


# ---------------------------------------------------------------------------- samples


WORDS = [
    "patients",
    "cells",
    "expression",
    "protein",
    "levels",
    "treatment",
    "study",
    "results",
    "analysis",
    "clinical",
    "increased",
    "significantly",
    "associated",
    "cancer",
    "disease",
    "risk",
    "group",
    "compared",
    "activity",
    "gene",
    "response",
    "effect",
    "mice",
    "tumor",
    "receptor",
    "induced",
    "human",
    "data",
    "model",
    "years",
    "function",
    "role",
]


def sentences(rng: random.Random) -> list[str]:
    """Real sentences (the mirror's extra abstracts) or, without the mirror, made-up ones."""
    path = MIRROR / "corpus" / "biomed_text.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        return [s.strip() + "." for t in texts for s in t.split(". ") if len(s) > 20]
    return [
        " ".join(rng.choices(WORDS, k=rng.randint(8, 30))).capitalize() + "." for _ in range(5000)
    ]


def text_of_length(rng: random.Random, pool: list[str], mean: float, sigma: float = 0.5) -> str:
    """Sentences drawn until a log-normal length of mean `mean` characters is reached."""
    target = rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)
    out, n = [], 0
    while n < target:
        s = rng.choice(pool)
        out.append(s)
        n += len(s) + 1
    return " ".join(out)


def pubmed_record(rng: random.Random, pool: list[str], pmid: int, shape: Shape) -> str:
    """One PubmedArticle with what real records carry besides the text."""
    title = escape(text_of_length(rng, pool, 110)[:300])
    abstract = ""
    if rng.random() < shape.abstract_fraction:
        text = escape(text_of_length(rng, pool, shape.abstract_chars))
        abstract = f"<Abstract><AbstractText>{text}</AbstractText></Abstract>"
    authors = "".join(
        f'<Author ValidYN="Y"><LastName>Name{rng.randrange(99999)}</LastName><ForeName>Ann'
        f"</ForeName><Initials>A</Initials><AffiliationInfo><Affiliation>Department {k}, "
        "University Hospital, City, Country.</Affiliation></AffiliationInfo></Author>"
        for k in range(rng.randint(1, 12))
    )
    mesh = "".join(
        f'<MeshHeading><DescriptorName UI="D{rng.randrange(10**6):06d}" MajorTopicYN="N">'
        f"Heading {k}</DescriptorName></MeshHeading>"
        for k in range(rng.randint(0, 15))
    )
    refs = "".join(
        f"<Reference><Citation>Author A, Author B. A cited article {k}. J Med. 2001;{k}:1-9."
        f'</Citation><ArticleIdList><ArticleId IdType="pubmed">{rng.randrange(10**7)}'
        "</ArticleId></ArticleIdList></Reference>"
        for k in range(rng.choice((0, 0, 0, 15, 40)))
    )
    return (
        f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}'
        "</PMID><DateCompleted><Year>2020</Year><Month>01</Month><Day>02</Day></DateCompleted>"
        '<Article PubModel="Print"><Journal><ISSN IssnType="Electronic">1234-5678</ISSN>'
        f"<JournalIssue><Volume>{pmid % 90}</Volume><PubDate><Year>{1960 + pmid % 63}</Year>"
        "</PubDate></JournalIssue><Title>Journal of Medicine</Title></Journal>"
        f"<ArticleTitle>{title}</ArticleTitle><Pagination><MedlinePgn>1-9</MedlinePgn>"
        f"</Pagination>{abstract}<AuthorList>{authors}</AuthorList><Language>eng</Language>"
        "<PublicationTypeList><PublicationType>Journal Article</PublicationType>"
        "</PublicationTypeList></Article><MedlineJournalInfo><Country>England</Country>"
        f"</MedlineJournalInfo><MeshHeadingList>{mesh}</MeshHeadingList></MedlineCitation>"
        "<PubmedData><PublicationStatus>ppublish</PublicationStatus><ArticleIdList>"
        f'<ArticleId IdType="pubmed">{pmid}</ArticleId><ArticleId IdType="doi">10.1/x.{pmid}'
        f"</ArticleId></ArticleIdList><ReferenceList>{refs}</ReferenceList></PubmedData>"
        "</PubmedArticle>"
    )


def write_pubmed(path: Path, n: int, rng: random.Random, pool: list[str], shape: Shape) -> None:
    body = "".join(pubmed_record(rng, pool, 30_000_000 + i, shape) for i in range(n))
    xml = f'<?xml version="1.0" ?>\n<PubmedArticleSet>{body}</PubmedArticleSet>\n'
    path.write_bytes(gzip.compress(xml.encode(), 6))


def pmc_article(rng: random.Random, pool: list[str], n: int, shape: Shape) -> str:
    """One JATS article: front matter, a body in sections of paragraphs, references."""
    body_chars = rng.lognormvariate(math.log(shape.pmc_text_chars) - 0.18, 0.6)
    secs, done = [], 0.0
    for title in ("Introduction", "Methods", "Results", "Discussion", "Conclusions"):
        paras = []
        while done < body_chars * (len(secs) + 1) / 5:
            p = text_of_length(rng, pool, 900)
            paras.append(f"<p>{escape(p)}</p>")
            done += len(p)
        secs.append(f"<sec><title>{title}</title>{''.join(paras)}</sec>")
    refs = "".join(
        f'<ref id="r{k}"><element-citation publication-type="journal"><person-group>'
        f"<name><surname>Author{k}</surname><given-names>A</given-names></name></person-group>"
        f"<article-title>A cited article {k}</article-title><source>J Med</source>"
        f"<year>2001</year><volume>{k}</volume><fpage>1</fpage></element-citation></ref>"
        for k in range(rng.randint(10, 60))
    )
    abstract = escape(text_of_length(rng, pool, 1500))
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">'
        "<front><journal-meta><journal-title-group><journal-title>J Med</journal-title>"
        "</journal-title-group></journal-meta><article-meta>"
        f'<article-id pub-id-type="pmc">PMC{n}</article-id>'
        f'<article-id pub-id-type="pmid">{n}</article-id><title-group><article-title>'
        f"{escape(text_of_length(rng, pool, 110)[:300])}</article-title></title-group>"
        '<pub-date pub-type="epub"><year>2019</year></pub-date><permissions><license '
        'xlink:href="https://creativecommons.org/licenses/by/4.0/"><license-p>CC BY'
        f"</license-p></license></permissions><abstract><p>{abstract}</p></abstract>"
        f"</article-meta></front><body>{''.join(secs)}</body><back><ref-list>{refs}"
        "</ref-list></back></article>"
    )


# ---------------------------------------------------------------------------- works
# Each runs in its own process (`run_work`): its CPU time and peak RSS are its own.


def work_parse_pubmed(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from mediswift.data.pubmed import parse_pubmed_file

    out = parse_pubmed_file(tmp / "pubmed.xml.gz", tmp / "parsed-pubmed", 50_000)
    return {
        "items": sum(n for _, n in out["shards"]),
        "abstracts": out["counts"]["PubmedArticle"] - out["counts"]["no_abstract"],
    }


def work_parse_pubmed_threads(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Two files in two threads, as Prefect's default (thread) runner runs parse tasks."""
    from concurrent.futures import ThreadPoolExecutor

    from mediswift.data.pubmed import parse_pubmed_file

    def one(i: int) -> int:
        out = parse_pubmed_file(tmp / "pubmed.xml.gz", tmp / f"threads-{i}", 50_000)
        return sum(n for _, n in out["shards"])

    with ThreadPoolExecutor(2) as pool:
        return {"items": sum(pool.map(one, range(2)))}


def work_parse_pmc(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from mediswift.data.pmc import PmcInput, parse_pmc_batch

    files = sorted((tmp / "pmc").glob("*.xml"))
    out = parse_pmc_batch([PmcInput(f, f.name) for f in files], tmp / "parsed-pmc", 50_000)
    return {"items": sum(n for _, n in out["shards"])}


# Each real file is parsed this many times in the one process: one pass over the mirror's 86
# articles takes ~0.1 s, and a cold start moved its rate by up to 1.7x between runs.
REAL_REPEAT = 5


def work_parse_real(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The same parsers on the mirror's real files (real markup: tables, inline formatting,
    references), to check the generated samples against."""
    from mediswift.data.pmc import PmcHints, PmcInput, parse_pmc_batch
    from mediswift.data.pubmed import parse_pubmed_file

    if opts["source"] == "pubmed":
        files = sorted((MIRROR / "pubmed" / "baseline").glob("*.xml.gz")) * REAL_REPEAT
        outs = [
            parse_pubmed_file(f, tmp / "real-pubmed" / f"{i}-{f.name}", 50_000)
            for i, f in enumerate(files)
        ]
        return {"items": sum(n for o in outs for _, n in o["shards"])}
    inputs = []
    for f in sorted((MIRROR / "pmc").glob("*/*.xml")):
        meta = json.loads(f.with_suffix(".json").read_text())  # the Cloud Service XML has no ids
        hints = PmcHints(meta["pmcid"], meta.get("pmid"), meta.get("license_code"))
        inputs.append(PmcInput(f, f.name, hints))
    outs = [parse_pmc_batch(inputs, tmp / f"real-pmc-{i}", 50_000) for i in range(REAL_REPEAT)]
    return {"items": sum(n for o in outs for _, n in o["shards"])}


def work_selection_result(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Memory a selection's result takes per article: the `PmcArticle` list `select_pmc`
    returns and the list of dicts the download task returns from it."""
    import psutil

    from mediswift.data.pmc_files import PmcArticle

    before = psutil.Process().memory_info().rss
    kept = [
        PmcArticle(f"PMC{n}.1", f"PMC{n}", str(30_000_000 + n), "CC BY-NC-ND",
                   f"PMC{n}.1/PMC{n}.1.xml", f"{n:032x}")
        for n in range(10_000_000, 10_000_000 + opts["n"])
    ]  # fmt: skip
    result = {"articles": [a.to_dict() for a in kept]}
    grown = psutil.Process().memory_info().rss - before
    return {"items": len(result["articles"]), "bytes_per_article": grown / len(kept)}


def work_thin_shards(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Shards holding only what the filter's plan reads, in the corpus's proportions: PubMed
    rows (44% with text, 2% re-sent by a later file) then PMC rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mediswift.data.shards import DOCUMENT_SCHEMA

    rows, shape = opts["rows"], Shape(**opts["shape"])
    n_pmc = int(rows * shape.pmc_articles / (shape.pmc_articles + shape.pubmed_records))
    rng = np.random.default_rng(0)
    pmids = np.arange(1, rows - n_pmc + 1, dtype=np.int64)
    resent = rng.choice(pmids, size=len(pmids) // 50, replace=False)
    pubmed_ids = np.concatenate([pmids, resent])
    folder = tmp / f"thin-{rows}"
    folder.mkdir()
    refs = []
    for i, start in enumerate(range(0, len(pubmed_ids) + n_pmc, shape.rows_per_shard)):
        ids = np.arange(start, min(start + shape.rows_per_shard, len(pubmed_ids) + n_pmc))
        pub = ids[ids < len(pubmed_ids)]
        pmc = ids[ids >= len(pubmed_ids)] - len(pubmed_ids)
        pm = pa.array(pubmed_ids[pub]).cast(pa.string())
        doc_id = pa.concat_arrays([
            pa.compute.binary_join_element_wise("pmid:", pm, ""),
            pa.compute.binary_join_element_wise("pmc:PMC", pa.array(pmc).cast(pa.string()), ""),
        ])  # fmt: skip
        has_text = rng.random(len(ids)) < np.where(
            ids < len(pubmed_ids), shape.abstract_fraction, 1.0
        )
        n = len(ids)
        table = pa.table({
            "doc_id": doc_id,
            "source": pa.array(["pubmed"] * len(pub) + ["pmc"] * len(pmc)),
            "pmid": pa.concat_arrays([pm, pa.array(pmc + 40_000_000).cast(pa.string())]),
            "pmcid": pa.nulls(n, pa.string()), "doi": pa.nulls(n, pa.string()),
            "pmid_version": pa.array(np.ones(n, dtype=np.int32)),
            "title": pa.array([""] * n),
            "text": pa.array(np.where(has_text, "x", "")),
            "year": pa.array(np.full(n, 2010, dtype=np.int32)),
            "language": pa.array(["eng"] * n),
            "pub_types": pa.array([[]] * n, pa.list_(pa.string())),
            "license": pa.nulls(n, pa.string()),
            "revised": pa.nulls(n, pa.string()), "published": pa.nulls(n, pa.string()),
        }, schema=DOCUMENT_SCHEMA)  # fmt: skip
        path = folder / f"{i:05d}.parquet"
        pq.write_table(table, path)
        refs.append({"path": str(path), "source": "pubmed" if len(pub) else "pmc"})
    (folder / "refs.json").write_text(json.dumps(refs))
    return {"items": len(pubmed_ids) + n_pmc, "shards": len(refs)}


def work_filter_plan(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from mediswift.data.filters import ShardRef, plan_filter

    refs = json.loads((tmp / f"thin-{opts['rows']}" / "refs.json").read_text())
    shards = [ShardRef(Path(r["path"]), r["source"]) for r in refs]
    codes, dropped = plan_filter(shards)
    return {"items": sum(len(c) for c in codes), "dropped": dropped}


def work_filter_apply(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The per-shard pass on the parsed sample of one source (every row kept)."""
    import numpy as np

    from mediswift.data.filters import apply_plan
    from mediswift.data.shards import num_rows

    items = 0
    for shard in sorted((tmp / f"parsed-{opts['source']}").glob("*.parquet")):
        out = tmp / "filtered" / opts["source"] / shard.name
        r = apply_plan(shard, np.zeros(num_rows(shard), np.uint8), out, "mediswift", 0.03)
        items += r["n_docs"]
    return {"items": items}


def _filtered_shards(tmp: Path) -> list[Path]:
    return sorted((tmp / "filtered").glob("*/*.parquet"))


def work_moses(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The vocab stage's Moses units (`moses_shard`) on the filtered samples' train split."""
    from mediswift.text.vocab import moses_shard

    docs = chars = moses_chars = size = 0
    for shard in _filtered_shards(tmp):
        out = tmp / "moses" / shard.parent.name / shard.name
        r = moses_shard(shard, out)
        docs, chars = docs + r["n_docs"], chars + r["text_chars"]
        moses_chars, size = moses_chars + r["moses_chars"], size + out.stat().st_size
    return {"items": docs, "chars": chars, "moses_chars": moses_chars, "bytes": size}


def _moses_files(tmp: Path) -> list[Path]:
    return sorted((tmp / "moses").glob("*/*.parquet"))


def work_bpe_pass(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """What the BPE unit does with every Moses file before training: check its sha256, read
    it back, and cut its documents into the trainer's lines on disk (as `learn_bpe` does)."""
    from mediswift.artifacts import file_digest
    from mediswift.text.bpe import split_lines
    from mediswift.text.vocab import read_moses_file

    chars = 0
    with open(tmp / "bpe-pass-lines.txt", "w", encoding="utf-8") as f:
        for path in _moses_files(tmp):
            file_digest(path)
            for doc in read_moses_file(path):
                chars += len(doc)
                for line in split_lines(doc):
                    f.write(line + "\n")
    return {"items": chars}


def work_bpe(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """sentencepiece BPE on `lines` lines sampled from the Moses units' documents."""
    from mediswift.text.bpe import learn_bpe
    from mediswift.text.vocab import read_moses_file

    docs = [d for path in _moses_files(tmp) for d in read_moses_file(path)]
    stats = learn_bpe(docs, tmp / f"bpe-{opts['lines']}" / "bpe.model", opts["vocab"],
                      sample_sentences=opts["lines"])  # fmt: skip
    return {"items": stats.n_sampled}


def _stage_input(tmp: Path, home: Path, shards: int, copies: int) -> None:
    """A filter output in `home`: the filtered samples' documents, `copies` times over,
    dealt round-robin into `shards` document shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mediswift.artifacts import Artifact
    from mediswift.text.token_shards import DOC_COLUMNS, iter_documents

    rows = [r for s in _filtered_shards(tmp) for r in iter_documents(s)]
    rows = [(f"{i}-{r[0]}", *r[1:]) for i in range(copies) for r in rows]
    art = Artifact("filter", "f", home / "filter" / "f").ensure()
    entries = []
    for k in range(shards):
        part = rows[k::shards]
        path = art.path / f"shard-{k:03d}.parquet"
        table = pa.table({c: [r[i] for r in part] for i, c in enumerate(DOC_COLUMNS)})
        pq.write_table(table, path)
        entries.append({"path": str(path.relative_to(home)), "n_docs": len(part)})
    art.write_manifest({"shards": entries, "counts": {"input": len(rows)}})


def work_vocab_stage(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """The vocab stage itself (`flows.stages.vocab`) with each worker count in turn, in one
    run, each in a fresh home: its wall time, and when its Moses units were over."""
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.stages import vocab as stage
    from mediswift import manifests
    from mediswift.artifacts import Artifact
    from mediswift.config import PipelineConfig
    from mediswift.manifests import FilterManifest
    from mediswift.stages import vocab as S

    @flow(name="scale-vocab-stage")
    def timed(home: str, workers: int) -> dict[str, Any]:
        root = Path(home)
        cfg = PipelineConfig.model_validate(
            {"vocab": {"vocab_size": opts["vocab"], "sample_sentences": opts["lines"],
                       "workers": workers}}
        )  # fmt: skip
        inputs = {"filter": Artifact("filter", "f", root / "filter" / "f")}
        out = Artifact("vocab", "v", root / "vocab" / "v")
        specs = S.moses_units(root, manifests.read(inputs["filter"], FilterManifest))
        t0 = time.time()
        result = stage.run(cfg, root, out, inputs)
        total = time.time() - t0
        # The Moses units are over when the last of their manifests is written.
        moses_end = max(s.artifact(root).manifest_path.stat().st_mtime for s in specs)
        return {"workers": workers, "total": total, "moses": moses_end - t0,
                "load": os.getloadavg()[0], "hash": result["hash"]}  # fmt: skip

    runs = []
    with prefect_test_harness(server_startup_timeout=300):
        for i, w in enumerate(opts["workers"]):
            home = tmp / f"vocab-stage-{i}"
            _stage_input(tmp, home, opts["shards"], opts["copies"])
            runs.append(timed(str(home), w))
    if len({r["hash"] for r in runs}) != 1:
        raise RuntimeError(f"the worker counts learned different vocabularies: {runs}")
    return {"items": len(runs), "runs": runs}


def work_tokenize(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from mediswift.artifacts import Artifact
    from mediswift.text.token_shards import tokenize_unit
    from mediswift.text.tokenizer import write_tokenizer_config

    tok = tmp / f"bpe-{opts['lines']}"
    write_tokenizer_config(tok)
    docs = tokens = 0
    for i, shard in enumerate(sorted((tmp / "filtered" / opts["source"]).glob("*.parquet"))):
        unit = Artifact("tokenize", f"u{i}", tmp / "tokens" / opts["source"] / f"u{i}")
        m = tokenize_unit(shard, tok, unit, tmp)
        docs += sum(s["n_docs"] for s in m["shards"])
        tokens += sum(s["n_tokens"] for s in m["shards"])
    return {"items": docs, "tokens": tokens, "tokens_per_doc": tokens / max(docs, 1)}


def run_work(name: str, tmp: Path, **opts: Any) -> dict[str, Any]:
    """A work in a fresh process: its result with CPU seconds, wall seconds and peak RSS."""
    cmd = [sys.executable, __file__, "--work", name, "--tmp", str(tmp), "--opts", json.dumps(opts)]
    # Cached bytecode, as `make bench` runs: a module compiled afresh is not the stage's work.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process(name: str, tmp: Path, opts: dict[str, Any]) -> None:
    """Run one work here, its imports done first (they are not the stage's work)."""
    import importlib

    # pandas: pyarrow imports it on its first table write.
    for module in ("numpy", "pandas", "pyarrow.parquet", "mediswift.data.pubmed",
                   "mediswift.data.pmc", "mediswift.data.filters", "mediswift.text.token_shards",
                   "mediswift.text.bpe", "mediswift.text.vocab"):  # fmt: skip
        importlib.import_module(module)
    start = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = WORKS[name](tmp, opts)
    end = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu"] = end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime
    result["wall"] = time.perf_counter() - t0
    result["peak_mb"] = end.ru_maxrss / 1024
    print(json.dumps(result))


def work_prefect(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Seconds a task costs the flow: N trivial tasks through a temporary Prefect server,
    timed inside the flow from the first submission to the last result (the flow run's own
    start and end are not per task), each one already done (a re-run: "Cached") and each run."""
    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness

    from mediswift.artifacts import unit_at
    from tasks.common import cached

    @task(name="scale-unit")
    def unit_task(key: str, home: str) -> dict[str, str]:
        return {"key": key}

    @flow(name="scale-tasks")
    def many(home: str, keys: list[str], reuse: bool) -> float:
        root, t0 = Path(home), time.perf_counter()
        futures = [
            (cached(unit_task, root, unit_at(root, "scale", k)) if reuse else unit_task).submit(
                key=k, home=home
            )
            for k in keys
        ]
        [f.result() for f in futures]
        return time.perf_counter() - t0

    n = opts["n"]
    keys = [f"k{i:05d}" for i in range(n)]
    for k in keys:
        unit_at(tmp, "scale", k).ensure().write_manifest({})
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=300):
        startup = time.perf_counter() - t0
        many(str(tmp), keys, True)  # writes the records a re-run finds
        cached_s = min(many(str(tmp), keys, True) for _ in range(2))
        run_s = min(many(str(tmp), keys, False) for _ in range(2))
    return {"items": n, "startup": startup, "cached": cached_s / n, "run": run_s / n}


WORKS = {
    name.removeprefix("work_"): fn for name, fn in globals().items() if name.startswith("work_")
}


# ---------------------------------------------------------------------------- download


def bucket_rates(tmp: Path) -> dict[str, float]:
    """Listing and metadata rates on the loopback bucket of `pmc_listing.py` (60k articles)."""
    import multiprocessing as mp

    import pmc_listing

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=pmc_listing.serve, args=(60_000, 0.0, ports), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=300)}/"
        cold = pmc_listing.run_phase("list-cold", url, tmp / "bucket-list", 0)
        sel = pmc_listing.run_phase("select-cold", url, tmp / "bucket-sel", 4_000)
        warm = pmc_listing.run_phase("select-warm", url, tmp / "bucket-sel", 4_000)
    finally:
        server.terminate()
        server.join(5)
    return {
        "page_ms": 1000 * cold["seconds"] / cold["list"],
        "select_cold": sel["count"] / sel["seconds"],
        "select_warm": warm["count"] / warm["seconds"],
        "base_mb": sel["peak"] / 2**20,
    }


def xml_fetch_rate(tmp: Path, rng: random.Random, pool: list[str], shape: Shape) -> float:
    """Article files/s that `fetch_pmc_batch` (3 connections; md5, fsync, rename per file)
    fetches from a loopback server: the stage's own ceiling, before any network."""
    import hashlib
    import multiprocessing as mp

    import download as download_bench

    from mediswift.data.http import HttpClient
    from mediswift.data.pmc_files import PmcArticle, fetch_pmc_batch

    served, articles = tmp / "served", []
    for n in range(200):
        folder = f"PMC{1000 + n}.1"
        body = pmc_article(rng, pool, 1000 + n, shape).encode()
        (served / folder).mkdir(parents=True)
        (served / folder / f"{folder}.xml").write_bytes(body)
        md5 = hashlib.md5(body).hexdigest()
        articles.append(
            PmcArticle(folder, folder[:-2], None, "CC BY", f"{folder}/{folder}.xml", md5)
        )
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=download_bench.serve, args=(str(served), ports), daemon=True)
    server.start()
    try:
        base = f"http://127.0.0.1:{ports.get(timeout=60)}/"
        client = HttpClient(contact_email="bench@example.org", max_connections=3)
        t0 = time.perf_counter()
        fetch_pmc_batch(client, base, tmp / "fetched", articles)
        return len(articles) / (time.perf_counter() - t0)
    finally:
        server.terminate()
        server.join(5)


# ---------------------------------------------------------------------------- the model


@dataclass
class Stage:
    """One row of the table: what the whole corpus asks of a stage."""

    name: str
    items: float
    unit: str
    rate: float  # items per second per core (or per second, for network-bound rows)
    peak_mb: float
    tasks: float
    # parallel: units spread over every process; node: the flow's node only (its processes);
    # global: one process; network: bound by bytes or requests, not cores
    kind: str = "parallel"
    per_process_limit: bool = False  # network: the connection limit is per process (x workers)
    wall_1: float = 0.0  # seconds, filled by `walls`
    wall_m: float = 0.0

    @property
    def core_h(self) -> float:
        return 0.0 if self.kind == "network" else self.items / self.rate / 3600


def fit(xs: list[float], ys: list[float], at: float) -> float:
    """The straight line through two measurements, evaluated at `at`."""
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    return ys[0] + slope * (at - xs[0])


def measure(tmp: Path, args: argparse.Namespace, shape: Shape) -> dict[str, Any]:
    """Every measurement the model needs (see the module docstring)."""
    rng = random.Random(0)
    pool = sentences(rng)
    write_pubmed(tmp / "pubmed.xml.gz", args.pubmed_sample, rng, pool, shape)
    (tmp / "pmc").mkdir()
    for n in range(args.pmc_sample):
        (tmp / "pmc" / f"PMC{n}.xml").write_text(pmc_article(rng, pool, 5000 + n, shape))
    m: dict[str, Any] = {"real_text": (MIRROR / "corpus").is_dir() and (MIRROR / "pmc").is_dir()}
    step("parse", m, "parse_pubmed", run_work("parse_pubmed", tmp))
    step("parse", m, "parse_threads", run_work("parse_pubmed_threads", tmp))
    step("parse", m, "parse_pmc", run_work("parse_pmc", tmp))
    if m["real_text"]:
        for source in ("pubmed", "pmc"):
            step("parse", m, f"real_{source}", run_work("parse_real", tmp, source=source))
    for rows in args.filter_rows:
        run_work("thin_shards", tmp, rows=rows, shape=asdict(shape))
        step("filter", m, f"plan_{rows}", run_work("filter_plan", tmp, rows=rows))
    for source in ("pubmed", "pmc"):
        step("filter", m, f"apply_{source}", run_work("filter_apply", tmp, source=source))
    step("vocab", m, "moses", run_work("moses", tmp))
    step("vocab", m, "bpe_pass", run_work("bpe_pass", tmp))
    for lines in args.bpe_lines:
        step("vocab", m, f"bpe_{lines}", run_work("bpe", tmp, lines=lines, vocab=8000))
    if args.vocab_workers:
        r = run_work("vocab_stage", tmp, workers=args.vocab_workers, shards=args.vocab_shards,
                     copies=args.vocab_copies, vocab=8000, lines=args.bpe_lines[-1])  # fmt: skip
        step("vocab", m, "vocab_stage", r)
    for source in ("pubmed", "pmc"):
        r = run_work("tokenize", tmp, source=source, lines=args.bpe_lines[-1])
        step("tokenize", m, f"tokenize_{source}", r)
    step("download", m, "bucket", bucket_rates(tmp))
    step("download", m, "result", run_work("selection_result", tmp, n=200_000))
    step("download", m, "xml_fetch", {"rate": xml_fetch_rate(tmp, rng, pool, shape)})
    step("tasks", m, "prefect", run_work("prefect", tmp / "prefect", n=args.tasks))
    return m


def step(stage: str, m: dict[str, Any], name: str, result: dict[str, Any]) -> None:
    m[name] = result
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    print(f"  {stage:<9}{name:<16}{json.dumps(shown)[:110]}", flush=True)


def per_core(r: dict[str, Any]) -> float:
    return r["items"] / r["cpu"]


def download_stages(m: dict[str, Any], args: argparse.Namespace, shape: Shape) -> list[Stage]:
    """Network-bound rows: NCBI bandwidth; S3 listing pages and requests at the stage's
    connections (32 for metadata, 3 for article files), each capped by what a core does here."""
    rtt, b = args.rtt_ms / 1000, m["bucket"]
    pages_s = shape.pmc_versions / 1000 * (b["page_ms"] + args.s3_page_ms) / 1000
    select_s = pages_s + shape.pmc_articles / min(b["select_cold"], 32 / rtt)
    select_mb = b["base_mb"] + m["result"]["bytes_per_article"] * shape.pmc_articles / 2**20
    return [
        Stage("download: PubMed files", shape.pubmed_files * shape.pubmed_gz_mb, "MB",
              args.ncbi_mbps, 0, shape.pubmed_files, "network"),
        Stage("download: PMC listing + selection", shape.pmc_articles, "articles",
              shape.pmc_articles / select_s, select_mb, 1, "network"),
        Stage("download: PMC article XML", shape.pmc_articles, "files",
              min(m["xml_fetch"]["rate"], 3 / rtt), 0, shape.pmc_articles / shape.pmc_batch,
              "network", per_process_limit=True),
    ]  # fmt: skip


def shard_counts(shape: Shape) -> tuple[int, int]:
    """Document shards parse writes: per PubMed file (50k rows a shard), per 1,000 articles."""
    per_file = math.ceil(shape.pubmed_records / shape.pubmed_files / shape.rows_per_shard)
    return shape.pubmed_files * per_file, math.ceil(shape.pmc_articles / shape.pmc_per_shard)


def parse_filter_stages(m: dict[str, Any], args: argparse.Namespace, shape: Shape) -> list[Stage]:
    rows = shape.pubmed_records + shape.pmc_articles
    pubmed_shards, pmc_shards = shard_counts(shape)
    plan = [m[f"plan_{r}"] for r in args.filter_rows]
    apply_s = (shape.pubmed_records / per_core(m["apply_pubmed"])
               + shape.pmc_articles / per_core(m["apply_pmc"]))  # fmt: skip
    apply_mb = max(m["apply_pubmed"]["peak_mb"], m["apply_pmc"]["peak_mb"])
    # The slower of the generated sample and the mirror's real files (real PMC markup weighs).
    pubmed = min((m[k] for k in ("parse_pubmed", "real_pubmed") if k in m), key=per_core)
    pmc = min((m[k] for k in ("parse_pmc", "real_pmc") if k in m), key=per_core)
    return [
        Stage("parse: PubMed", shape.pubmed_records, "records", per_core(pubmed),
              pubmed["peak_mb"], shape.pubmed_files),
        Stage("parse: PMC", shape.pmc_articles, "articles", per_core(pmc), pmc["peak_mb"],
              pmc_shards),
        Stage("filter: plan (global dedup etc.)", rows, "ids",
              rows / fit(args.filter_rows, [r["cpu"] for r in plan], rows),
              fit(args.filter_rows, [r["peak_mb"] for r in plan], rows), 1, "global"),
        Stage("filter: shards", rows, "rows", rows / apply_s, apply_mb,
              pubmed_shards + pmc_shards),
    ]  # fmt: skip


def train_chars(shape: Shape) -> float:
    """Characters of the train split's documents (title + text), before Moses."""
    abstracts = shape.pubmed_records * shape.abstract_fraction
    return 0.97 * (abstracts * (shape.abstract_chars + 110)
                   + shape.pmc_articles * (shape.pmc_text_chars + 1_600))  # fmt: skip


def vocab_tokenize_stages(m: dict[str, Any], args: argparse.Namespace, shape: Shape) -> list[Stage]:
    abstracts = shape.pubmed_records * shape.abstract_fraction
    kept = abstracts + shape.pmc_articles
    bpe = [m[f"bpe_{n}"] for n in args.bpe_lines]
    bpe_s = fit(args.bpe_lines, [r["cpu"] for r in bpe], shape.bpe_lines)
    bpe_mb = fit(args.bpe_lines, [r["peak_mb"] for r in bpe], shape.bpe_lines)
    tok = {s: m[f"tokenize_{s}"] for s in ("pubmed", "pmc")}
    tok_s = abstracts / per_core(tok["pubmed"]) + shape.pmc_articles / per_core(tok["pmc"])
    tok_mb = max(tok["pubmed"]["peak_mb"], tok["pmc"]["peak_mb"])
    moses, bpe_pass = m["moses"], m["bpe_pass"]
    moses_chars = train_chars(shape) * moses["moses_chars"] / moses["chars"]
    validation = 0.03 * kept  # Moses + BPE per document, as tokenize does
    return [
        Stage("vocab: Moses units (all train text)", train_chars(shape) / 1e6, "M chars",
              moses["chars"] / moses["cpu"] / 1e6, moses["peak_mb"], sum(shard_counts(shape))),
        Stage("vocab: BPE unit reads the Moses files", moses_chars / 1e6, "M chars",
              per_core(bpe_pass) / 1e6, bpe_pass["peak_mb"], 1, "global"),
        Stage("vocab: BPE learning (2M lines)", shape.bpe_lines, "lines", shape.bpe_lines / bpe_s,
              bpe_mb, 0, "global"),
        Stage("vocab: unk rate on validation (3%)", validation, "docs", kept / tok_s, tok_mb, 0,
              "global"),
        Stage("tokenize", kept, "docs", kept / tok_s, tok_mb, sum(shard_counts(shape))),
    ]  # fmt: skip


def stages(m: dict[str, Any], args: argparse.Namespace, shape: Shape) -> list[Stage]:
    """The whole corpus through each stage, from the per-item measurements."""
    return (
        download_stages(m, args, shape)
        + parse_filter_stages(m, args, shape)
        + vocab_tokenize_stages(m, args, shape)
    )


# The download stage keeps 4 x max_connections (3) tasks in flight; in one process they share
# the per-host limit of 3 connections, as processes (Dask) each task's process has its own.
DOWNLOAD_WINDOW = 12


def walls(rows: list[Stage], per_task: float, args: argparse.Namespace) -> None:
    """Each stage's wall time on one node and on the cluster (see the module docstring)."""
    cluster = args.workers * args.worker_cores
    for s in rows:
        orchestration = s.tasks * per_task
        if s.kind == "network":
            alone = s.items / s.rate
            spread = min(DOWNLOAD_WINDOW, args.cores) if s.per_process_limit else 1
            s.wall_1 = max(alone / spread, orchestration)
            spread = min(DOWNLOAD_WINDOW, cluster) if s.per_process_limit else 1
            s.wall_m = max(alone / spread, orchestration)
        elif s.kind == "parallel":
            s.wall_1 = max(s.core_h * 3600 / args.cores, orchestration)
            s.wall_m = max(s.core_h * 3600 / cluster, orchestration)
        else:
            procs = args.cores if s.kind == "node" else 1
            s.wall_1 = s.wall_m = s.core_h * 3600 / procs


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def report(rows: list[Stage], m: dict[str, Any], args: argparse.Namespace, shape: Shape) -> None:
    p = m["prefect"]
    print(f"\nPrefect: {p['run'] * 1e3:.1f} ms a task run, {p['cached'] * 1e3:.1f} ms a cached "
          f"task ({args.tasks} tasks in a flow; server start {p['startup']:.0f} s)")  # fmt: skip
    if "real_pmc" in m:
        print(f"parse per core, generated / the mirror's real files: PubMed "
              f"{per_core(m['parse_pubmed']):,.0f} / {per_core(m['real_pubmed']):,.0f} records/s, "
              f"PMC {per_core(m['parse_pmc']):,.0f} / {per_core(m['real_pmc']):,.0f} articles/s "
              "(the table takes the slower)")  # fmt: skip
    print(f"parse in threads (the local runner): 2 files in 2 threads "
          f"{2 * m['parse_pubmed']['wall'] / m['parse_threads']['wall']:.2f}x one file's speed")  # fmt: skip
    tokens = (shape.pubmed_records * shape.abstract_fraction * m["tokenize_pubmed"]["tokens_per_doc"]
              + shape.pmc_articles * m["tokenize_pmc"]["tokens_per_doc"])  # fmt: skip
    text = "the mirror's real abstracts" if m["real_text"] else "made-up words (no mirror)"
    print(f"corpus: {tokens / 1e9:.1f}B tokens at this sample's tokens/doc (BPE 8,000); "
          f"sample text: sentences of {text}")  # fmt: skip
    head = (f"{'stage':<36}{'items':>12} {'unit':<9}{'/s/core':>10}{'core-h':>8}{'peak MB':>9}"
            f"{'tasks':>9}{'orch.':>8}{f'1x{args.cores}':>9}{f'{args.workers}x{args.worker_cores}':>9}")  # fmt: skip
    print("\n" + head)
    for s in rows:
        rate = f"{s.rate:,.0f}" + ("*" if s.kind == "network" else "")
        print(f"{s.name:<36}{s.items:>12,.0f} {s.unit:<9}{rate:>10}{s.core_h:>8.1f}"
              f"{s.peak_mb:>9,.0f}{s.tasks:>9,.0f}{hours(s.tasks * p['run']):>8}"
              f"{hours(s.wall_1):>9}{hours(s.wall_m):>9}")  # fmt: skip
    print(f"{'total':<36}{'':>12} {'':<9}{'':>10}{sum(s.core_h for s in rows):>8.0f}{'':>9}"
          f"{sum(s.tasks for s in rows):>9,.0f}{hours(sum(s.tasks for s in rows) * p['run']):>8}"
          f"{hours(sum(s.wall_1 for s in rows)):>9}{hours(sum(s.wall_m for s in rows)):>9}")  # fmt: skip
    print(
        "* network rows: items/s over the network (rtt "
        f"{args.rtt_ms:.0f} ms, NCBI {args.ncbi_mbps:.0f} MB/s), not per core"
    )
    threaded = sum(s.core_h for s in rows if s.name.startswith(("parse", "filter: shards")))
    xml = next(s for s in rows if s.per_process_limit)
    print(f"both columns run the unit tasks as processes (the 1x{args.cores} node: the executor "
          "on a local Dask cluster). With Prefect's default thread runner (one process) parse "
          f"and the filter's shards get about one core (see 'parse in threads'): "
          f"{threaded:.1f} h, and every download task shares one process's 3 connections: "
          f"article XML {hours(xml.items / xml.rate)}")  # fmt: skip
    vocab_report(rows, m, shape)


def vocab_report(rows: list[Stage], m: dict[str, Any], shape: Shape) -> None:
    """The vocab stage: its fanned-out and its one-process parts, its disk, and the stage
    itself with each worker count side by side on this machine."""
    moses = next(s for s in rows if s.name.startswith("vocab: Moses"))
    alone = sum(s.core_h for s in rows if s.name.startswith("vocab") and s.kind == "global")
    r = m["moses"]
    moses_gb = train_chars(shape) * r["moses_chars"] / r["chars"] / 1e9
    print(f"vocab: the Moses units fan out like tokenize ({moses.core_h:.1f} core-h; at the "
          f"default vocab.workers: 2 on one node {hours(moses.core_h * 3600 / 2)}); the BPE "
          f"unit runs in one process ({hours(alone * 3600)}). On disk: the Moses units "
          f"~{moses_gb * r['bytes'] / r['moses_chars']:.0f} GB (zstd Parquet), the trainer's "
          f"lines file ~{moses_gb:.0f} GB while BPE learns")  # fmt: skip
    if "vocab_stage" not in m:
        return
    runs = m["vocab_stage"]["runs"]
    shown = ", ".join(
        f"{r['workers']} worker(s) {r['total']:.1f} s (Moses units {r['moses']:.1f} s,"
        f" load {r['load']:.1f})"
        for r in runs
    )
    print(f"the vocab stage here, same run, same input: {shown}; the same vocabulary each time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=32, help="cores of the one node")
    ap.add_argument("--workers", type=int, default=8, help="Dask workers")
    ap.add_argument("--worker-cores", type=int, default=16, help="processes a Dask worker runs")
    ap.add_argument("--rtt-ms", type=float, default=30.0, help="an S3 GET's round trip")
    ap.add_argument("--s3-page-ms", type=float, default=150.0, help="an S3 listing page")
    ap.add_argument("--ncbi-mbps", type=float, default=50.0, help="NCBI download bandwidth")
    ap.add_argument("--pubmed-sample", type=int, default=4_000, help="records parsed")
    ap.add_argument("--pmc-sample", type=int, default=150, help="articles parsed")
    ap.add_argument("--filter-rows", type=int, nargs=2, default=[1_000_000, 3_000_000])
    ap.add_argument("--bpe-lines", type=int, nargs=2, default=[20_000, 40_000])
    ap.add_argument("--tasks", type=int, default=300, help="trivial tasks timed in a flow")
    ap.add_argument(
        "--vocab-workers",
        type=int,
        nargs="*",
        default=[1, 2],
        help="run the vocab stage with each of these worker counts (none: skip)",
    )
    ap.add_argument("--vocab-shards", type=int, default=8, help="document shards it reads")
    ap.add_argument("--vocab-copies", type=int, default=4,
                    help="times the samples' documents are repeated in its input")  # fmt: skip
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--opts", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.work:
        in_process(args.work, Path(args.tmp), json.loads(args.opts))
        return
    shape = Shape()
    t0 = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus); measuring:")
    with tempfile.TemporaryDirectory(prefix="mediswift-scale-") as tmp:
        m = measure(Path(tmp), args, shape)
    rows = stages(m, args, shape)
    walls(rows, m["prefect"]["run"], args)
    report(rows, m, args, shape)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
