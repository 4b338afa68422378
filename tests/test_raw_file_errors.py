"""Raw files that do not load: every error names the file (and line or item), and a task file or
corpus that arrived malformed is moved aside to `<home>/quarantine/`, so the next run fetches it
again and, once the source is fixed, succeeds. Library level: no Prefect server, no training.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from mediswift.artifacts import unit_at
from mediswift.config import load_recipe
from mediswift.data.corpus import CorpusFormatError, iter_corpus, iter_lines
from mediswift.data.download import HttpClient, PermanentError, client_for
from mediswift.data.pmc_select import select_pmc
from mediswift.data.quarantine import RawFileError
from mediswift.data.sources import fetch_corpus
from mediswift.finetune.datasets import prepare_task
from mediswift.finetune.ddi_data import load_split as ddi_split
from mediswift.finetune.hoc import load_documents
from mediswift.finetune.pubmedqa import pqal_splits
from mediswift.finetune.sources import fetch_task_files
from mediswift.stages.filter_contamination import evaluation_texts

# JSON nested far deeper than Python's parser recurses: RecursionError, not a ValueError.
DEEP = b"[" * 200_000 + b"]" * 200_000
NOT_UTF8 = b"\xff\xfe not UTF-8"


def _copy(src: Path, dest: Path) -> Path:
    """A writable copy of a (read-only) mirror folder."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copyfile(f, dest / f.name)
    return dest


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text
    return text


# -- planted cache records ----------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_deeply_nested_cache_record_is_ignored_with_a_warning(tmp_path: Path) -> None:
    from tasks.common import read_record, record_path

    home = tmp_path / "home"
    unit = unit_at(home, "parse", "k1").ensure()
    unit.write_manifest({"n": 1})
    path = record_path(home, unit, "t1")
    path.parent.mkdir(parents=True)
    path.write_bytes(DEEP)
    # Prefect's logging setup stops this logger's records from propagating: listen on it.
    logger, seen = logging.getLogger("tasks.common"), Collect()
    logger.addHandler(seen)
    try:
        assert read_record(path, unit, "t1") is None
    finally:
        logger.removeHandler(seen)
    [line] = seen.lines
    assert line.startswith(f"ignoring cache record {path}") and "nested too deeply" in line


# -- PMC metadata -------------------------------------------------------------------------------


def test_deeply_nested_pmc_metadata_fails_naming_the_file(mirror_dir: Path, tmp_path: Path):
    bucket = tmp_path / "bucket"
    folders = sorted(p.name for p in (mirror_dir / "pmc").iterdir())[:2]
    for f in folders:
        _copy(mirror_dir / "pmc" / f, bucket / f)
    (bucket / folders[1] / f"{folders[1]}.json").write_bytes(DEEP)
    client = HttpClient(max_retries=1, backoff_s=0.01)
    with pytest.raises(PermanentError) as info:
        select_pmc(client, str(bucket), tmp_path / "raw")
    text = _one_line(info.value)
    assert f"{folders[1]}.json: metadata is not valid JSON: nested too deeply" in text


# -- extra corpora ------------------------------------------------------------------------------

BAD_LINES = {
    "not UTF-8": NOT_UTF8,
    "nested too deeply": b'{"id": "b", "text": ' + DEEP + b"}",
    "needs a string 'id'": b'{"id": 5, "text": "a number is no id"}',
}


@pytest.mark.parametrize("problem", ["not UTF-8", "nested too deeply"])
def test_corpus_line_errors_name_file_and_line(problem: str, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine"}\n' + BAD_LINES[problem] + b"\n")
    with pytest.raises(CorpusFormatError, match=re.escape(f"{path}: line 2: ") + ".*" + problem):
        list(iter_corpus(path, "c"))


@pytest.mark.parametrize("problem", BAD_LINES)
def test_bad_corpus_is_moved_aside_and_fetched_again(problem: str, tmp_path: Path) -> None:
    src, raw = tmp_path / "src" / "extra.jsonl", tmp_path / "home" / "raw"
    src.parent.mkdir()
    good = b'{"id": "a", "text": "Aspirin inhibits COX-1."}\n'
    src.write_bytes(good + BAD_LINES[problem] + b"\n")
    client = HttpClient(max_retries=1, backoff_s=0.01)
    with pytest.raises(PermanentError) as info:
        fetch_corpus(client, str(src), None, raw)
    aside = tmp_path / "home" / "quarantine" / "raw" / "corpus" / "extra.jsonl"
    text = _one_line(info.value)
    assert f"{src}: line 2: " in text and problem in text
    assert f"moved aside to {aside}" in text and "next run fetches it again" in text
    assert not (raw / "corpus" / "extra.jsonl").exists() and aside.is_file()
    src.write_bytes(good)  # the source is fixed: the next run fetches it and succeeds
    assert fetch_corpus(client, str(src), None, raw)["records"] == 1


@pytest.mark.parametrize("gz", [False, True])
def test_corpus_line_over_the_cap_names_file_and_line(gz: bool, tmp_path: Path) -> None:
    """A line of exactly the cap passes; one byte more is refused, naming the line, after
    reading at most the cap (`iter_lines` hands back bounded chunks only)."""
    cap = 1024
    fits = b'{"id": "a", "text": "' + b"x" * (cap - 23) + b'"}'
    assert len(fits) == cap
    over = fits.replace(b'"a"', b'"ab"')
    path = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
    write = gzip.open if gz else open
    with write(path, "wb") as f:
        f.write(fits + b"\n" + fits + b"\n" + over + b"\n")
    with pytest.raises(CorpusFormatError) as info:
        list(iter_corpus(path, "c", max_line_bytes=cap))
    assert _one_line(info.value) == (
        f"{path}: line 3: longer than {cap} bytes (the cap is parse.max_record_bytes)"
    )
    seen = [len(line) for _, line in iter_lines(path, 10 * cap)]
    assert seen == [cap + 1, cap + 1, cap + 2]  # with their newlines
    with pytest.raises(CorpusFormatError):  # the check reads a line in pieces of at most cap
        max(len(line) for _, line in iter_lines(path, cap))


def test_corpus_with_a_giant_line_is_moved_aside(tmp_path: Path) -> None:
    src, raw = tmp_path / "src" / "extra.jsonl", tmp_path / "home" / "raw"
    src.parent.mkdir()
    src.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "' + b"x" * 100_000 + b'"}')
    client = HttpClient(max_retries=1, backoff_s=0.01)
    with pytest.raises(PermanentError, match="line 2: longer than 65536 bytes") as info:
        fetch_corpus(client, str(src), None, raw, max_line_bytes=65_536)
    assert "moved aside" in _one_line(info.value)
    assert not (raw / "corpus" / "extra.jsonl").exists()


# -- PubMedQA, HoC, DDI readers -----------------------------------------------------------------


def _pqal(mirror_dir: Path, tmp_path: Path, edit) -> tuple[Path, Path, str]:
    items = json.loads((mirror_dir / "pubmedqa" / "ori_pqal.json").read_text())
    pmid = sorted(items)[3]
    path = tmp_path / "ori_pqal.json"
    path.write_text(json.dumps(edit(items, pmid)))
    return path, mirror_dir / "pubmedqa" / "test_ground_truth.json", pmid


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda items, p: {**items, p: "just a string"}, "is a str, not an object"),
        (lambda items, p: {**items, p: {**items[p], "CONTEXTS": [1, 2]}}, "CONTEXTS is not a"),
        (lambda items, p: {**items, p: {**items[p], "final_decision": ["yes"]}}, "final_decision"),
    ],
    ids=["string-item", "int-contexts", "list-label"],
)
def test_bad_pubmedqa_item_names_file_and_item(mirror_dir: Path, tmp_path: Path, edit, problem):
    path, truth, pmid = _pqal(mirror_dir, tmp_path, edit)
    with pytest.raises(RawFileError, match=re.escape(f"{path}: item {pmid}") + ".*" + problem):
        pqal_splits(path, truth)


def test_non_utf8_pubmedqa_and_hoc_files_are_named(mirror_dir: Path, tmp_path: Path) -> None:
    qa = tmp_path / "ori_pqal.json"
    qa.write_bytes(b'{"1": "' + NOT_UTF8 + b'"}')
    with pytest.raises(RawFileError, match=re.escape(f"{qa}: not UTF-8 text")):
        pqal_splits(qa, mirror_dir / "pubmedqa" / "test_ground_truth.json")
    qa.write_bytes(DEEP)
    with pytest.raises(RawFileError, match=re.escape(f"{qa}: nested too deeply")):
        pqal_splits(qa, mirror_dir / "pubmedqa" / "test_ground_truth.json")
    hoc = tmp_path / "dev.tsv"
    lines = (mirror_dir / "hoc" / "dev.tsv").read_bytes().splitlines(keepends=True)
    hoc.write_bytes(b"".join(lines[:3]) + NOT_UTF8 + b"\n" + b"".join(lines[3:]))
    with pytest.raises(RawFileError, match=re.escape(f"{hoc}:4: not UTF-8 text (byte 0xff)")):
        load_documents(hoc)


def test_deeply_nested_ddi_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(b'{"d1": ' + DEEP + b"}")
    with pytest.raises(RawFileError, match=re.escape(f"{path}: nested too deeply")):
        ddi_split(path)


# -- a task file that arrived malformed is fetched again ----------------------------------------


def test_bad_pubmedqa_file_is_moved_aside_and_fetched_again(mirror_dir: Path, tmp_path: Path):
    mirror, home = tmp_path / "mirror", tmp_path / "home"
    source = _copy(mirror_dir / "pubmedqa", mirror / "pubmedqa") / "ori_pqal.json"
    good = source.read_bytes()
    items = json.loads(good)
    pmid = sorted(items)[0]
    source.write_text(json.dumps({**items, pmid: {**items[pmid], "CONTEXTS": [1, 2]}}))
    cfg = load_recipe("demo", mirror=str(mirror))
    task, client = cfg.finetune.task("pubmedqa"), client_for(cfg.download)

    def prepare() -> dict:
        files = fetch_task_files(client, task, home, cfg.resolve)
        paths = {role: home / rel for role, rel in files.items()}
        return prepare_task(task, paths, tmp_path / "data", home=home)

    with pytest.raises(RawFileError) as info:
        prepare()
    raw = home / "raw" / "pubmedqa" / "ori_pqal.json"
    aside = home / "quarantine" / "raw" / "pubmedqa" / "ori_pqal.json"
    text = _one_line(info.value)
    assert text.startswith(f"{raw}: item {pmid}: CONTEXTS is not a list of strings")
    assert text.endswith(f"moved aside to {aside}, the next run fetches it again")
    assert not raw.exists() and aside.read_bytes() == source.read_bytes()
    assert (home / "raw" / "pubmedqa" / "test_ground_truth.json").is_file()  # the good one stays
    source.write_bytes(good)  # the mirror is fixed: the next run fetches the file again
    assert prepare()["full_counts"] == {"train": 450, "dev": 50, "test": 500}


def test_bad_hoc_file_in_decontamination_is_moved_aside(mirror_dir: Path, tmp_path: Path):
    mirror, home = tmp_path / "mirror", tmp_path / "home"
    folder = _copy(mirror_dir / "hoc", mirror / "hoc")
    good = (folder / "test.tsv").read_bytes()
    (folder / "test.tsv").write_bytes(good[:-200] + NOT_UTF8 + good[-200:])
    cfg = load_recipe("demo", mirror=str(mirror))
    task, client = cfg.finetune.task("hoc"), client_for(cfg.download)

    def texts() -> list:
        files = fetch_task_files(client, task, home, cfg.resolve, eval_only=True)
        return evaluation_texts("hoc", task, {r: home / p for r, p in files.items()}, home)

    with pytest.raises(RawFileError, match=r"test\.tsv:\d+: not UTF-8 text.*moved aside"):
        texts()
    assert (home / "quarantine" / "raw" / "hoc" / "test.tsv").is_file()
    (folder / "test.tsv").write_bytes(good)
    assert {t.split for t in texts()} == {"dev", "test"}
