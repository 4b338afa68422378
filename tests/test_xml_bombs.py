"""Decompression bombs: a ~300 KB .xml.gz that expands to one huge node is refused while it
streams, naming the file, at a bounded cost in memory.

lxml's incremental parser keeps a comment, CDATA section, processing instruction or start tag
whole in its input buffer until it sees its end, and libxml2 refuses an oversized one only then:
an 800 MB comment cost ~800 MB. Each bomb here is parsed in a child process whose peak RSS
(`os.wait4`) is compared with a child that parses a real PubMed file.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mediswift.data.pmc import PmcHints, PmcInput, parse_pmc_batch
from mediswift.data.pubmed import iter_pubmed
from mediswift.data.xml import RunGuard, XMLLimitError, XMLLimits

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
EXPANDS_TO = 300 * MB
OVER_CLEAN_RUN_MB = 100  # what a refused bomb may cost above a clean run's peak

# kind -> (opening, filler, closing) of the one huge node, inside a PubmedArticleSet.
BOMBS = {
    "comment": (b"<!--", b"x", b"-->"),
    "attribute": (b'<PubmedArticle a="', b"x", b'"/>'),
    "text": (b"<PubmedArticle>", b"x", b"</PubmedArticle>"),
    "cdata": (b"<PubmedArticle><![CDATA[", b"<", b"]]></PubmedArticle>"),
    "pi": (b"<?bomb ", b"x", b"?>"),
}
# What the error calls each node.
NAMES = {
    "comment": "comment",
    "attribute": "tag",
    "text": "text node",
    "cdata": "CDATA section",
    "pi": "processing instruction",
}


def write_bomb(path: Path, kind: str, size: int = EXPANDS_TO) -> Path:
    """A gzip of many members: one compressed megabyte of filler, repeated (fast to build)."""
    opening, filler, closing = BOMBS[kind]
    block = gzip.compress(filler * MB, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(b'<?xml version="1.0"?>\n<PubmedArticleSet>\n' + opening))
        for _ in range(size // MB):
            f.write(block)
        f.write(gzip.compress(closing + b"\n</PubmedArticleSet>\n"))
    return path


CHILD = r"""
import json, sys
from mediswift.data.pubmed import iter_pubmed
from mediswift.data.xml import XMLLimits
limits = XMLLimits(**json.loads(sys.argv[2]))
try:
    n = sum(1 for _ in iter_pubmed(sys.argv[1], limits=limits))
    print(json.dumps({"docs": n}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def parse_in_child(path: Path, **limits: int) -> tuple[dict, float]:
    """(what the child reported, its peak RSS in MB)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), json.dumps(limits)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, out
    return json.loads(out), usage.ru_maxrss / 1024  # KiB on Linux


@pytest.fixture(scope="module")
def clean_peak_mb(mirror_dir: Path) -> float:
    got, peak = parse_in_child(mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz")
    assert got["docs"] > 0
    return peak


# The text kind uses a 4 MiB cap: libxml2 stops a text node at 10 MB by itself, and the cap
# must act below that too.
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("kind", "cap"),
    [("comment", None), ("attribute", None), ("cdata", None), ("pi", None), ("text", 4 * MB)],
)
def test_bomb_is_refused_in_bounded_memory(
    kind: str, cap: int | None, clean_peak_mb: float, tmp_path: Path
) -> None:
    bomb = write_bomb(tmp_path / f"pubmed26n{kind}.xml.gz", kind)
    assert bomb.stat().st_size < 1 * MB
    got, peak = parse_in_child(bomb, **({"max_node_bytes": cap} if cap else {}))
    assert got.get("error") == "XMLLimitError", got
    assert str(bomb) in got["message"] and f"a {NAMES[kind]} " in got["message"], got
    assert peak - clean_peak_mb < OVER_CLEAN_RUN_MB, (peak, clean_peak_mb)


def test_decompressed_bytes_per_file_are_capped(tmp_path: Path) -> None:
    """Many small, valid records: no node is large, the file is."""
    record = b"<DeleteCitation><PMID>1</PMID></DeleteCitation>\n"
    path = tmp_path / "pubmed26n9999.xml.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"<PubmedArticleSet>\n" + record * (6 * MB // len(record)) + b"</PubmedArticleSet>")
    with pytest.raises(XMLLimitError, match=rf"{path}: .*more than {4 * MB} decompressed"):
        sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_bytes=4 * MB)))
    assert sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_bytes=8 * MB))) == 0


def test_pmc_bomb_is_quarantined_and_the_batch_goes_on(mirror_dir: Path, tmp_path: Path):
    real = sorted(mirror_dir.glob("pmc/*/*.xml"))[:2]
    bomb = write_bomb(tmp_path / "PMC0000001.xml", "comment", size=8 * MB)  # gzip inside
    inputs = [PmcInput(p, p.name, PmcHints(p.stem.split(".")[0])) for p in [real[0], bomb, real[1]]]
    limits = XMLLimits(max_node_bytes=1 * MB)
    result = parse_pmc_batch(inputs, tmp_path / "out", 100, quarantine=True, limits=limits)
    assert [q["input"] for q in result["quarantined"]] == [bomb.name]
    assert "a comment " in result["quarantined"][0]["error"]
    assert sum(n for _, n in result["shards"]) == 2


@pytest.mark.parametrize("read_size", [1, 2, 3, 5, 8, 9, 13, 64, 1 << 20])
def test_run_guard_does_not_depend_on_read_boundaries(read_size: int) -> None:
    """Each node of `n` bytes is refused under a cap of n - 1 and passes with a little slack
    (its delimiters), however the stream is cut into reads."""
    n = 200
    docs = {
        "comment": b"<a><!--" + b"x" * n + b"--></a>",
        "comment of <": b"<a><!--" + b"<" * n + b"--></a>",
        "attribute": b'<a b="' + b"x" * n + b'"/>',
        "text": b"<a>" + b"x" * n + b"</a>",
        "cdata": b"<a><![CDATA[" + b"<" * n + b"]]></a>",
        "pi": b"<?pi " + b"<" * n + b"?><a/>",
        "many small nodes": b"<a>" + b"<b c='x'>y<!--z--><?p q?><![CDATA[r]]></b>" * n + b"</a>",
    }
    for name, doc in docs.items():
        for cap, refused in ((n - 1, name != "many small nodes"), (n + 16, False)):
            guard = RunGuard(Path("f.xml"), cap)
            try:
                for i in range(0, len(doc), read_size):
                    guard.feed(doc[i : i + read_size])
                guard.feed(b"")
            except XMLLimitError:
                assert refused, (name, cap)
            else:
                assert not refused, (name, cap)
