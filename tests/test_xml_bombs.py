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
def peak_kb():
    # This process's own peak (VmHWM starts anew at exec; ru_maxrss keeps the forking
    # parent's peak, which made the check measure the test process).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
try:
    n = sum(1 for _ in iter_pubmed(sys.argv[1], limits=limits))
    print(json.dumps({"docs": n, "peak_kb": peak_kb()}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e), "peak_kb": peak_kb()}))
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
    assert child.wait() == 0, out
    got = json.loads(out)
    return got, got.pop("peak_kb") / 1024


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


# -- element-count bombs ------------------------------------------------------------------------
# Millions of tiny nodes pass every byte cap, and each costs libxml2 and lxml 150-350 bytes: 10M
# in one record used to cost ~1.2 GB and end without an error. Each shape below holds 10M nodes
# (of one kind) where the tree would keep them.

RECORD_OPEN = b"<PubmedArticle><MedlineCitation><PMID>1</PMID><Article><Abstract>"
RECORD_CLOSE = b"</Abstract></Article></MedlineCitation></PubmedArticle>"
COUNT_BOMBS = {
    # kind -> (before the flood, one flooded item, after it)
    "elements in a record": (RECORD_OPEN, b"<AbstractText/>\n", RECORD_CLOSE),
    "comments in a record": (RECORD_OPEN, b"<!---->", RECORD_CLOSE),
    "pis after the records": (RECORD_OPEN + RECORD_CLOSE, b"<?p?>", b""),
    "entity references": (
        RECORD_OPEN + b"<AbstractText>",
        b"&a;x",
        b"</AbstractText>" + RECORD_CLOSE,
    ),
    "attributes": (RECORD_OPEN + b"<AbstractText", b"", b"/>" + RECORD_CLOSE),  # see below
}
DOCTYPE = (
    b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
)


def write_count_bomb(path: Path, kind: str, items: int = 10_000_000) -> Path:
    """`items` flooded items (in blocks of 10,000: one compressed gzip member, repeated)."""
    before, item, after = COUNT_BOMBS[kind]
    block, blocks = gzip.compress(item * 10_000, compresslevel=9), items // 10_000
    if kind == "attributes":  # unique names: one tag, 1M of them (they count as 2 nodes each)
        names = b"".join(b' a%x=""' % i for i in range(1_000_000))
        block, blocks = gzip.compress(names), 1
    with open(path, "wb") as f:
        f.write(
            gzip.compress(b'<?xml version="1.0"?>\n' + DOCTYPE + b"<PubmedArticleSet>" + before)
        )
        for _ in range(blocks):
            f.write(block)
        f.write(gzip.compress(after + b"</PubmedArticleSet>\n"))
    return path


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", list(COUNT_BOMBS))
def test_element_count_bomb_is_refused_in_bounded_memory(
    kind: str, clean_peak_mb: float, tmp_path: Path
) -> None:
    bomb = write_count_bomb(tmp_path / "pubmed26n0001.xml.gz", kind)
    assert bomb.stat().st_size < 4 * MB  # unique attribute names compress least
    got, peak = parse_in_child(bomb)  # the default limits
    assert got.get("error") == "XMLLimitError", got
    assert got["message"].startswith(f"{bomb}: refusing XML: one record"), got
    assert "more than 500000 elements, attributes" in got["message"], got
    assert "parse.max_xml_record_nodes" in got["message"], got
    assert peak - clean_peak_mb < 200, (peak, clean_peak_mb)


@pytest.mark.subprocess
def test_nested_records_do_not_keep_their_siblings(clean_peak_mb: float, tmp_path: Path):
    """Records inside a record, 200 levels deep, each level behind 20,000 siblings: no run
    passes the per-record cap, so releasing a record must free its ancestors' earlier
    siblings too (4M nodes, ~0.5 GB, were kept)."""
    inner = b"<PubmedArticle><MedlineCitation><PMID>2</PMID></MedlineCitation></PubmedArticle>"
    level = gzip.compress(b"<x/>" * 20_000 + b"<y>" + inner)
    path = tmp_path / "pubmed26n0001.xml.gz"
    with open(path, "wb") as f:
        f.write(gzip.compress(b"<PubmedArticleSet>" + RECORD_OPEN))
        for _ in range(200):
            f.write(level)
        f.write(gzip.compress(b"</y>" * 200 + RECORD_CLOSE + b"</PubmedArticleSet>"))
    got, peak = parse_in_child(path)
    # The outer record lost its citation to the releases: a bad record, named.
    assert got.get("message", "").startswith(f"{path}: "), got
    assert peak - clean_peak_mb < 200, (peak, clean_peak_mb)


def _records(n: int, per_record: int) -> bytes:
    record = RECORD_OPEN + b"<AbstractText>a</AbstractText>" * per_record + RECORD_CLOSE
    return b"<PubmedArticleSet>\n" + (record + b"\n") * n + b"</PubmedArticleSet>\n"


@pytest.mark.parametrize("gz", [True, False])
def test_record_node_cap_counts_one_record_at_a_time(gz: bool, tmp_path: Path) -> None:
    """Records of ~10,000 nodes each pass a cap of 11,000 however many there are (they are
    released one by one); one record of 15,000 is refused (the count may miss the nodes of
    one read, 32 KiB, at the start of a record: never more)."""
    path = tmp_path / ("p.xml.gz" if gz else "p.xml")
    write = gzip.open if gz else open
    with write(path, "wb") as f:
        f.write(_records(30, 10_000))
    limits = XMLLimits(max_record_nodes=11_000)
    assert sum(1 for _ in iter_pubmed(path, limits=limits)) == 30
    with write(path, "wb") as f:
        f.write(_records(30, 10_000).replace(b"</PubmedArticleSet>", _records(1, 15_000)[19:]))
    with pytest.raises(XMLLimitError, match=rf"^{path}: refusing XML: one record .* 11000 "):
        sum(1 for _ in iter_pubmed(path, limits=limits))


def test_small_plain_file_over_the_record_cap_streams(tmp_path: Path) -> None:
    """A file small enough to parse whole, but with more nodes than a record may hold, is
    streamed instead, so the cap still holds (a 4 MiB file of `&a;` is 1.4M nodes)."""
    path = tmp_path / "p.xml"
    path.write_bytes(_records(1, 2_000))
    with pytest.raises(XMLLimitError, match="one record"):
        sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_record_nodes=1_000)))


def test_file_node_cap(tmp_path: Path) -> None:
    path = tmp_path / "p.xml.gz"
    with gzip.open(path, "wb") as f:
        f.write(_records(300, 100))
    with pytest.raises(XMLLimitError, match=r"more than 20000 elements, .*parse\.max_xml_nodes"):
        sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_nodes=20_000)))
    assert sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_nodes=40_000))) == 300


def test_record_byte_cap(tmp_path: Path) -> None:
    """Many nodes each under the node cap add up: a record's bytes are capped too."""
    path = tmp_path / "p.xml.gz"
    with gzip.open(path, "wb") as f:
        f.write(_records(3, 10).replace(b">a<", b">" + b"a" * 100_000 + b"<"))
    with pytest.raises(XMLLimitError, match=r"spans more than 524288 decompressed bytes"):
        sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_record_bytes=512 << 10)))
    assert sum(1 for _ in iter_pubmed(path, limits=XMLLimits(max_record_bytes=2 << 20))) == 3
