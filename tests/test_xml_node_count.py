"""The node count behind the count caps, reported part by part: at the end of every slice the
parser is handed, exactly what a count of everything before that point gives."""

from __future__ import annotations

import gzip
import itertools
import random
import re
from pathlib import Path

from mediswift.data.xml import RunGuard, count_nodes, count_nodes_between

# Comments, CDATA sections and PIs count as one node at their opener, nothing inside them.
_SPECIALS = re.compile(rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>", re.S)


def _reference(data: bytes, cuts: list[int]) -> list[int]:
    """The nodes before each cut, each special's bytes replaced by one `<` and spaces."""
    masked = _SPECIALS.sub(lambda m: b"<" + b" " * (len(m.group()) - 1), data)
    return [count_nodes(masked, 0, cut) for cut in cuts]


def _real_xml(mirror_dir: Path) -> bytes:
    with gzip.open(mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz") as f:
        return f.read(300_000)


def test_parts_add_up_to_the_counts_of_each_range(mirror_dir: Path) -> None:
    data = _real_xml(mirror_dir)
    rng = random.Random(3)
    for size in (100, 3000, 70_000):  # below and above the vectorised threshold
        lo = rng.randrange(len(data) - size)
        # A `</` cut in two is counted where its `<` is.
        slash = data.index(b"</", lo + 10)
        bounds = sorted({lo, *(rng.randrange(lo, lo + size) for _ in range(5)), slash + 1})
        bounds.append(max(bounds) + 1)
        parts = count_nodes_between(data, bounds)
        assert parts == [count_nodes(data, a, b) for a, b in itertools.pairwise(bounds)]
        assert sum(parts) == count_nodes(data, bounds[0], bounds[-1])


def test_counts_at_cuts_skip_what_comments_cdata_and_pis_hold(mirror_dir: Path) -> None:
    body = _real_xml(mirror_dir)[:120_000]
    # Specials holding tags, attributes and entities that are not nodes, some straddling cuts.
    special = b"<!-- <a x='1'> &amp; --><![CDATA[<b y=2>&c;]]><?pi <d e=3>?>"
    data = special.join(body[i : i + 9000] for i in range(0, len(body), 9000))
    guard = RunGuard(Path("f.xml"), 1 << 20)
    inside, at = data.index(special, 50_000) + 10, data.index(special, 20_000)  # at an opener
    cuts = [*range(1000, len(data) - 16, 7919), inside, at]
    cuts.sort()
    assert guard.feed(data, cuts) == _reference(data, cuts)
    # The same bytes fed in two parts give the same counts at the cuts of the second.
    half = len(data) // 2
    second = RunGuard(Path("f.xml"), 1 << 20)
    second.feed(data[:half])
    later = [c for c in cuts if c > half + 16]
    assert second.feed(data[half:], later) == _reference(data, later)
