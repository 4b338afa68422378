"""Prefect tasks of the parse stage: each wraps one parser of `mediswift.data`.

One task per PubMed file, per batch of PMC articles and per extra corpus file. Each takes `key`,
the content key of its unit (input checksums + parse settings + parser version), writes its
shards into `<home>/parse/units/<key>/` and the unit manifest last, and returns a small dict
with paths relative to `<home>`. Parsing never touches the network: no retries.

A bad input raises (naming the file and the position) unless `on_error` is "quarantine": then
the task returns it under "quarantined" and leaves no shard for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import Artifact, unit_at
from mediswift.data.corpus import CorpusFormatError, parse_corpus_file
from mediswift.data.pmc import PmcHints, PmcInput, parse_pmc_batch
from mediswift.data.pubmed import parse_pubmed_file
from mediswift.data.xml import XMLLimits, XMLParseError

# Bump when the parsers' output changes: it re-keys every parse unit.
# 2: no UNLABELLED label, PMC summary/synopsis headings kept, earliest publication year.
PARSER_VERSION = 2

BAD_INPUT = (XMLParseError, CorpusFormatError, ValueError, OSError)


def unit(home: str, key: str) -> Artifact:
    return unit_at(Path(home), "parse", key)


def _done(home: str, key: str) -> dict[str, Any] | None:
    """The unit's result when it is already on disk (e.g. the Prefect cache was cleared)."""
    u = unit(home, key)
    return (
        {k: v for k, v in u.manifest().items() if k not in ("stage", "key")} if u.done() else None
    )


def _finish(home: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
    """Make shard paths relative to home, then mark the unit done (manifest last).

    A unit that quarantined an input is not marked done: the next run tries that input again
    (and fails it, if the recipe now says "fail")."""
    root = Path(home)
    result["shards"] = [
        {"path": str(p.relative_to(root)), "n_docs": n} for p, n in result["shards"]
    ]
    if not result["quarantined"]:
        unit(home, key).ensure().write_manifest(result)
    return result


def _quarantine(home: str, key: str, input_rel: str, error: Exception) -> dict[str, Any]:
    return _finish(
        home, key, {"shards": [], "quarantined": [{"input": input_rel, "error": str(error)}]}
    )


@task(name="parse-pubmed-file", task_run_name="parse-pubmed-{input}")
def parse_pubmed(
    key: str, home: str, input: str, rows_per_shard: int, on_error: str, limits: list[int]
) -> dict[str, Any]:
    if (done := _done(home, key)) is not None:
        return done
    out = unit(home, key).path
    try:
        result = parse_pubmed_file(Path(home) / input, out, rows_per_shard, XMLLimits(*limits))
    except BAD_INPUT as e:
        if on_error != "quarantine":
            raise
        return _quarantine(home, key, input, e)
    return _finish(home, key, {**result, "quarantined": []})


@task(name="parse-pmc-batch", task_run_name="parse-pmc-batch-{index}")
def parse_pmc(
    key: str,
    home: str,
    index: int,
    articles: list[dict[str, Any]],
    rows_per_shard: int,
    on_error: str,
    limits: list[int],
) -> dict[str, Any]:
    if (done := _done(home, key)) is not None:
        return done
    inputs = [
        PmcInput(
            path=Path(home) / a["path"],
            label=a["path"],
            hints=PmcHints(a.get("pmcid"), a.get("pmid"), a.get("license")),
        )
        for a in articles
    ]
    result = parse_pmc_batch(
        inputs,
        unit(home, key).path,
        rows_per_shard,
        quarantine=on_error == "quarantine",
        limits=XMLLimits(*limits),
    )
    return _finish(home, key, result)


@task(name="parse-corpus-file", task_run_name="parse-corpus-{name}")
def parse_corpus(
    key: str, home: str, input: str, name: str, rows_per_shard: int, on_error: str
) -> dict[str, Any]:
    if (done := _done(home, key)) is not None:
        return done
    try:
        result = parse_corpus_file(Path(home) / input, name, unit(home, key).path, rows_per_shard)
    except BAD_INPUT as e:
        if on_error != "quarantine":
            raise
        return _quarantine(home, key, input, e)
    return _finish(home, key, {**result, "quarantined": []})
