"""Safe, streaming XML reading shared by the PubMed and PMC parsers.

Every XML file goes through `iter_elements`: libxml2 through lxml, with entity expansion, DTD
loading and network access switched off and lxml's size limits left on (`huge_tree=False`);
large and gzipped files through its incremental parser (`XMLPullParser`). Three more guards:

- A document whose internal DTD subset declares entities (the XXE and billion-laughs shapes) is
  refused with `UnsafeXMLError` before any of its text is used. PubMed and PMC files only ever
  carry an external DOCTYPE line, so real files never trip it. libxml2's amplification limit
  stops a billion-laughs file even earlier, as a syntax error.
- Parse and decompression errors (malformed XML, a truncated gzip) become `XMLParseError`, which
  names the file and the position (line and column of the XML, or compressed bytes read).
- Size caps (`XMLLimits`) on the decompressed bytes of a file and on any single text run,
  comment, tag (its attribute values), CDATA section or processing instruction, enforced on the
  bytes as they stream towards libxml2 (`GuardedStream`): lxml's incremental parser keeps a
  comment, CDATA section, PI or start tag whole in its input buffer until it sees the end, so a
  1 MB gzip expanding to an 800 MB comment used to cost 800 MB before libxml2 refused it. Over a
  cap the read fails with `XMLLimitError`, naming the file, before libxml2 holds more than the
  cap.
- Count caps on the nodes libxml2 builds (elements, attributes, comments, processing
  instructions, entity references), counted on the same bytes: per file, and held at once,
  which is one record and whatever lies between two records (`RunGuard` counts, `GuardedStream`
  checks each slice before the parser gets it). Many tiny nodes pass every byte cap, yet each
  costs libxml2 and lxml 150-350 bytes: 10M empty elements in one record used to cost 1.2 GB.
  The bytes one record spans are capped too (many nodes each under the node cap add up).

Memory stays flat because every finished record goes back to `release`, which clears it and
deletes the already processed siblings before it (and those of its ancestors, should a file nest
records), so the tree holds at most one record and what the parser read past it.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from lxml import etree

# The only parser settings used for untrusted XML anywhere in the project.
SAFE_PARSER_OPTIONS: dict[str, bool] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 31  # zlib reads the gzip header and checks the trailer (CRC, length) itself
GZIP_INPUT = 128 << 10  # compressed bytes read at a time
# Plain files up to this size are parsed whole (see `iter_elements`).
WHOLE_FILE_BYTES = 4 << 20


class XMLParseError(ValueError):
    """A file that is not well-formed XML (or not a complete gzip stream)."""


class UnsafeXMLError(XMLParseError):
    """A file that declares DTD entities (possible XXE or entity-expansion attack)."""


class XMLLimitError(XMLParseError):
    """A file over one of the `XMLLimits` (possible decompression bomb), refused while streaming."""


@dataclass(frozen=True)
class XMLLimits:
    """Caps on what one XML file may cost, checked before libxml2 buffers the bytes.

    `max_bytes`: decompressed bytes per file (2 GiB: far above any PubMed or PMC file, far below
    what a gzip bomb expands to). `max_node_bytes`: the longest run of raw bytes one text node,
    comment, tag with its attributes, CDATA section or processing instruction may span (real ones
    are far smaller; libxml2 refuses a text node over 10 MB by itself, but not the others).
    Peak memory of a refused file stays near `max_node_bytes` above a clean run.

    `max_nodes`: elements, attributes, comments, PIs and entity references per file (a real
    PubMed or PMC file has one per 30-45 bytes: 2 GiB of real XML holds ~70M).
    `max_record_nodes`: the same, held at once: one record and what lies between two records
    (real records hold up to ~10^4; each node costs up to ~350 bytes, so the default bounds a
    record's tree near 175 MB). `max_record_bytes`: decompressed bytes one record may span.
    """

    max_bytes: int = 2 << 30
    max_node_bytes: int = 64 << 20
    max_nodes: int = 100_000_000
    max_record_nodes: int = 500_000
    max_record_bytes: int = 64 << 20


DEFAULT_LIMITS = XMLLimits()
# The recipe setting behind each cap (named in the error, so the user knows what to raise).
SETTINGS = {
    "max_bytes": "max_xml_bytes",
    "max_node_bytes": "max_xml_node_bytes",
    "max_nodes": "max_xml_nodes",
    "max_record_nodes": "max_xml_record_nodes",
    "max_record_bytes": "max_record_bytes",
}
NODES = "elements, attributes, comments, processing instructions and entity references"
# `GuardedStream` reads and checks the (decompressing) stream a block at a time and hands the
# parser a slice at a time. The slice sets how exactly the count of the nodes held at once can
# tell one record from the next (see `GuardedStream`); the block is larger, because each
# block's checks cost a fixed Python overhead plus numpy passes. Measured on a 10 MB PubMed
# file, against a bare iterparse: `iterparse` pulling 32 KiB per `read`, checked per read,
# 1.15x its time; 32 KiB blocks fed to a pull parser 1.12x; 128 KiB blocks in 32 KiB slices
# 1.09-1.10x (whole 128 KiB slices 1.06x, but then a record's count may miss four times as
# much). Larger blocks cost more again: zlib ~15% more per byte in 256 KiB calls, and the node
# count's numpy passes fall out of the cache.
STREAM_BLOCK = 128 << 10
FEED_SLICE = 32 << 10
# Where a comment, CDATA section or PI starts, and how it ends (and what to call it).
_OPENER = re.compile(rb"<(!--|!\[CDATA\[|\?)")
_SPECIAL = {
    b"!--": (b"-->", "comment"),
    b"![CDATA[": (b"]]>", "CDATA section"),
    b"?": (b"?>", "processing instruction"),
}
# Bytes held back between reads: an opener (up to 9 bytes) or an end may straddle two reads.
_HOLD = 8
# Segments at least this long are counted by numpy (one vectorised pass per character, ~5x
# faster than `bytes.count` on a read); shorter ones, as in a flood of tiny comments, by
# `bytes.count`, which costs less per call.
_VECTOR_MIN = 4096
_LT, _SLASH, _EQ, _AMP = b"</=&"


def count_nodes(data: bytes, lo: int, hi: int) -> int:
    """The nodes text and tags in data[lo:hi] may open, an upper bound: every `<` but `</`
    (an element, or the DOCTYPE), every `=` (an attribute) and every `&` (an entity reference);
    a `</` cut by `hi` is counted where its `<` is."""
    return count_nodes_between(data, [lo, hi])[0]


def count_nodes_between(data: bytes, bounds: Sequence[int]) -> list[int]:
    """`count_nodes` of each range between consecutive `bounds` (ascending), in one pass."""
    lo, hi = bounds[0], bounds[-1]
    if hi - lo < _VECTOR_MIN:
        return [
            data.count(b"<", a, b)
            - data.count(b"</", a, min(b + 1, len(data)))
            + data.count(b"=", a, b)
            + data.count(b"&", a, b)
            for a, b in itertools.pairwise(bounds)
        ]
    every = np.frombuffer(data, np.uint8)
    seg = every[lo:hi]
    opened = seg == _LT
    after = every[lo + 1 : hi + 1]  # one shorter where hi is the end of data
    opened[: len(after)] &= after != _SLASH
    opened |= seg == _EQ
    opened |= seg == _AMP
    return [int(np.count_nonzero(opened[a - lo : b - lo])) for a, b in itertools.pairwise(bounds)]


class _Marks:
    """Finds the openers of comments, CDATA sections and PIs in one read.

    Each opener has `!` or `?` right after its `<`. Both are single bytes, found by memchr at
    memory speed and rare in PubMed and PMC text, so the opener pattern is tried only where
    one follows a `<` (a regular expression searching from `<` tries every tag: ~10x slower).
    The next position of each is kept, so a read full of comments is still scanned once.
    """

    def __init__(self, data: bytes, stop: int):
        self.data, self.stop = data, stop
        self.next = {b"!": -1, b"?": -1}  # next position of each mark (-1: not looked for)

    def opener(self, pos: int) -> re.Match[bytes] | None:
        """The first opener whose `<` lies in data[pos:stop], or None."""
        found = [m for m in (self._first(b"!", pos), self._first(b"?", pos)) if m is not None]
        return min(found, key=lambda m: m.start()) if found else None

    def _first(self, mark: bytes, pos: int) -> re.Match[bytes] | None:
        data, i = self.data, self.next[mark]
        if i <= pos:  # the `<` at i - 1 must lie at pos or after
            i = data.find(mark, pos + 1, self.stop + 1)
        while 0 <= i <= self.stop:
            if data[i - 1] == _LT and (m := _OPENER.match(data, i - 1)) is not None:
                self.next[mark] = i
                return m
            i = data.find(mark, i + 1, self.stop + 1)
        self.next[mark] = len(data) + 1  # none left before stop: do not look again
        return None


class RunGuard:
    """A streaming lexical check: how far the current node runs in the raw bytes.

    Outside comments, CDATA and PIs every text node and every attribute value lies between two
    `<` (XML forbids `<` in both), so the distance between consecutive `<` bounds them, and the
    tag around them. A comment, CDATA section or PI may contain `<`; it is measured from its
    opener to its end marker instead. This runs in C string searches, a few per read: it does
    not parse XML, only bounds what libxml2 could be made to buffer.
    """

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = path, limit
        self.pending = b""  # held-back tail of the last read
        self.offset = 0  # decompressed offset of pending[0]
        self.end: bytes | None = None  # end marker of the open comment/CDATA/PI
        self.kind = ""  # what the open comment/CDATA/PI is called
        self.start = 0  # decompressed offset where the current run started
        self.in_tag = False  # inside a tag (for the message only)
        # Nodes libxml2 will build from the bytes checked so far (an upper bound): every `<`
        # but `</` opens an element, comment, CDATA section, PI or the DOCTYPE; every `=` outside
        # comments/CDATA/PIs may be an attribute and every `&` an entity reference (text holds a
        # few of both, counted too: real files stay far below the caps).
        self.nodes = 0
        self._cuts: list[int] = []  # offsets in this feed's data still to report `nodes` at
        self._at: list[int] = []  # what `feed` returns

    def feed(self, chunk: bytes, cuts: Sequence[int] = ()) -> list[int]:
        """Check the next decompressed bytes; an empty chunk marks the end of the file. Returns,
        for each of `cuts` (strictly ascending decompressed offsets, none past the chunk's end),
        the nodes counted before it (the last few bytes of a chunk are counted with the next
        one, so a cut among them gets the count before them)."""
        data = self.pending + chunk if self.pending else chunk
        stop = max(len(data) - _HOLD, 0) if chunk else len(data)
        pos = 0
        marks = _Marks(data, stop)
        self._cuts, self._at = [c - self.offset for c in cuts], []
        while pos < stop:
            pos = (
                self._markup(data, pos, stop, marks)
                if self.end is None
                else self._special(data, pos, stop)
            )
        self._settle(len(data))
        self.offset += pos
        self.pending = data[pos:]
        return self._at

    def _settle(self, upto: int) -> None:
        """Report the nodes counted so far at every cut up to `upto`."""
        while self._cuts and self._cuts[0] <= upto:
            self._cuts.pop(0)
            self._at.append(self.nodes)

    def _markup(self, data: bytes, pos: int, stop: int, marks: _Marks) -> int:
        """Text and tags up to the next comment/CDATA/PI opener (or `stop`)."""
        m = marks.opener(pos)
        seg_end = stop if m is None else m.start()
        self._lt_gaps(data, pos, seg_end)
        if m is None:
            return stop
        self.end, self.kind = _SPECIAL[m.group(1)]
        self.start = self.offset + m.start()
        self._settle(m.start())
        self.nodes += 1
        return m.end()

    def _lt_gaps(self, data: bytes, lo: int, hi: int) -> None:
        """Check every distance between consecutive `<` in data[lo:hi], and the open run; count
        the nodes opened there (a `</` cut by `hi` is counted where its `<` is)."""
        self._settle(lo)
        inner = [c for c in self._cuts if c < hi]
        *before, rest = count_nodes_between(data, [lo, *inner, hi])
        for n in before:  # one for each cut inside, the first ones left
            self.nodes += n
            self._at.append(self.nodes)
            self._cuts.pop(0)
        self.nodes += rest
        first = data.find(b"<", lo, hi)
        if first < 0:
            self.in_tag = self.in_tag and data.find(b">", lo, hi) < 0
            self._check(self.offset + hi, "tag" if self.in_tag else "text node")
            return
        self.in_tag = self.in_tag and data.find(b">", lo, first) < 0
        self._check(self.offset + first, "tag" if self.in_tag else "text node")
        last = data.rfind(b"<", first, hi)
        if last - first > self.limit:  # only with tiny limits: gaps inside the segment too
            self._each_gap(data, first, last)
        self.start = self.offset + last
        self.in_tag = data.rfind(b">", last, hi) < 0
        self._check(self.offset + hi, "tag" if self.in_tag else "text node")

    def _each_gap(self, data: bytes, first: int, last: int) -> None:
        p = first
        while p < last:
            q = data.find(b"<", p + 1, last + 1)
            self.start = self.offset + p
            self._check(self.offset + q, "tag or text node")
            p = q

    def _special(self, data: bytes, pos: int, stop: int) -> int:
        """Inside a comment, CDATA section or PI: find its end marker."""
        assert self.end is not None
        i = data.find(self.end, pos)
        if i < 0:
            self._check(self.offset + stop, self.kind)
            return stop
        self._check(self.offset + i, self.kind)
        after = i + len(self.end)
        self.end = None
        self.in_tag = False
        self.start = self.offset + after
        return after

    def _check(self, at: int, kind: str) -> None:
        if at - self.start > self.limit:
            raise XMLLimitError(
                f"{self.path}: refusing XML: a {kind} starting at decompressed byte {self.start} "
                f"runs past the limit of {self.limit} bytes per node (possible decompression "
                "bomb; the cap is `max_node_bytes` of the parse limits, setting "
                "parse.max_xml_node_bytes)"
            )


class GuardedStream:
    """The decompressed bytes of one file, checked against `XMLLimits` before libxml2 sees them.

    Why here: libxml2 refuses an oversized node only once it has buffered it, so the caps have
    to act on the bytes on their way in. `slices` checks each block as it is read and each
    slice before it is handed on, so a limit stops the parse with at most one slice of extra
    bytes buffered (and one block, plus a copy of one slice, held here). What the tree holds at
    once is counted from the end of the slice the parser had when the last record was released:
    the count may miss the nodes of one slice at the start of a record, never more.
    """

    def __init__(self, stream: IO[bytes], path: Path, limits: XMLLimits):
        self.stream, self.path, self.limits = stream, path, limits
        self.guard = RunGuard(path, limits.max_node_bytes)
        self.fed_bytes = self.fed_nodes = 0  # up to the end of the last slice handed on
        # The same when the last record was released: what the tree may still hold is what
        # was handed on since.
        self.released_nodes = 0
        self.released_bytes = 0

    def released(self) -> None:
        """The consumer released a record: count what is held from here."""
        self.released_nodes, self.released_bytes = self.fed_nodes, self.fed_bytes

    def slices(self) -> Iterator[bytes]:
        """The file's bytes, `FEED_SLICE` at a time, each checked before it is handed on."""
        while True:
            start = self.fed_bytes
            block = self.stream.read(STREAM_BLOCK)
            if start + len(block) > self.limits.max_bytes:
                self._refuse(f"more than {self.limits.max_bytes} decompressed bytes", "max_bytes")
            ends = [*range(start + FEED_SLICE, start + len(block), FEED_SLICE), start + len(block)]
            # First: a single huge node is named as such.
            nodes_at = self.guard.feed(block, ends if block else ())
            if not block:
                self._check(start, self.guard.nodes)  # the last bytes, held back until now
                return
            lo = start
            for end, nodes in zip(ends, nodes_at, strict=True):
                self._check(end, nodes)
                self.fed_bytes, self.fed_nodes = end, nodes
                yield block if len(ends) == 1 else block[lo - start : end - start]
                lo = end

    def _check(self, end: int, nodes: int) -> None:
        """The caps on what the parser holds once it has the bytes up to `end` (`nodes` in all)."""
        if end - self.released_bytes > self.limits.max_record_bytes:
            self._refuse(
                f"one record (or what lies between two records) spans more than "
                f"{self.limits.max_record_bytes} decompressed bytes",
                "max_record_bytes",
            )
        if nodes > self.limits.max_nodes:
            self._refuse(f"more than {self.limits.max_nodes} {NODES}", "max_nodes")
        if nodes - self.released_nodes > self.limits.max_record_nodes:
            self._refuse(
                f"one record (or what lies between two records) holds more than "
                f"{self.limits.max_record_nodes} {NODES}",
                "max_record_nodes",
            )

    def _refuse(self, what: str, cap: str) -> None:
        raise XMLLimitError(
            f"{self.path}: refusing XML: {what} (possible decompression or element-count bomb; "
            f"the cap is `{cap}` of the parse limits, setting parse.{SETTINGS[cap]})"
        )


_local = threading.local()


def safe_parser() -> etree.XMLParser:
    """A whole-document parser with the same settings (one per thread: lxml parsers must not
    be shared between threads, and making one per file costs time)."""
    if not hasattr(_local, "parser"):
        _local.parser = etree.XMLParser(**SAFE_PARSER_OPTIONS)
    return _local.parser


class GzipReader(io.RawIOBase):
    """The decompressed bytes of a gzip file of one or more members, as `gzip.GzipFile` reads
    them (zero padding between members skipped, anything else after a member refused), with
    the same errors: `EOFError` for a truncated file, `gzip.BadGzipFile` for a bad member,
    `zlib.error` for corrupt data. zlib checks each member's CRC and length itself while it
    inflates; `GzipFile` computes the CRC again in Python, which costs ~10% of reading."""

    def __init__(self, raw: IO[bytes]):
        super().__init__()
        self.raw = raw
        self.inflater = zlib.decompressobj(GZIP_WBITS)
        self.input = b""  # compressed bytes not yet inflated

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        """`n` bytes (fewer only at the end), across members, as `GzipFile` gives them: where
        reads end decides which cap a bomb meets first (`GuardedStream` reads a block at a
        time and names the first cap the block passes)."""
        if n is None or n < 0:
            return self.readall()  # everything: only for callers that bound the size themselves
        size = n
        data = self._inflate(size) if size else b""
        while data and len(data) < size:
            more = self._inflate(size - len(data))
            if not more:
                break
            data += more
        return data

    def _inflate(self, size: int) -> bytes:
        """Up to `size` bytes of one member (b"" at the end of the file)."""
        while True:
            if self.inflater.eof and not self._next_member():
                return b""
            if not self.input:
                self.input = self.raw.read(GZIP_INPUT)
                if not self.input:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
            out = self.inflater.decompress(self.input, size)  # at most `size`: bombs stay small
            inflater = self.inflater
            self.input = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if out:
                return out

    def _next_member(self) -> bool:
        """Start the next member; False at the end of the file."""
        data = self.input.lstrip(b"\x00")
        while len(data) < len(GZIP_MAGIC):
            more = self.raw.read(GZIP_INPUT)
            if not more:
                if data:
                    raise gzip.BadGzipFile(f"Not a gzipped file ({data!r})")
                return False
            data = (data + more).lstrip(b"\x00")
        if not data.startswith(GZIP_MAGIC):
            raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
        self.inflater, self.input = zlib.decompressobj(GZIP_WBITS), data
        return True


def open_binary(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(stream to parse, raw file): gzip is detected by its magic bytes, not the file name.
    Unbuffered: every read is of a whole block or file (a buffer only adds a copy), and the
    magic bytes are peeked without moving the file's position (one system call, not three)."""
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the caller)
    if os.pread(raw.fileno(), len(GZIP_MAGIC), 0) == GZIP_MAGIC:
        return GzipReader(raw), raw
    return raw, raw


def check_entities(element: etree._Element, path: Path) -> None:
    """Refuse documents whose internal DTD subset declares entities."""
    dtd = element.getroottree().docinfo.internalDTD
    if dtd is None:
        return
    for entity in dtd.iterentities():
        where = f"SYSTEM {entity.system_url!r}" if entity.system_url else "internal"
        raise UnsafeXMLError(
            f"{path}: refusing XML that declares DTD entity {entity.name!r} ({where}); "
            "real PubMed/PMC files declare none (possible XXE or entity expansion attack)"
        )


# What `iter_elements` may cut from a whole file before parsing it: the bytes to parse and a check
# of the tree they gave, or None to parse the file as it is.
Trim = Callable[[bytes], "tuple[bytes, Callable[[etree._Element], bool]] | None"]


def iter_elements(
    path: Path | str,
    tags: Iterable[str],
    limits: XMLLimits = DEFAULT_LIMITS,
    trim: Trim | None = None,
) -> Iterator[etree._Element]:
    """Yield each element whose tag is in `tags` (in document order; tags must not nest, and
    records must be the root or its children, as in every PubMed and PMC format).

    Files larger than `WHOLE_FILE_BYTES` (or than the node cap) and every gzip file stream
    through an `XMLPullParser` fed by `GuardedStream`, so memory stays flat whatever their
    size and a decompression bomb fails with `XMLLimitError` before libxml2 buffers it. Smaller
    plain files (a PMC article, an efetch reply) are parsed whole by libxml2 with the same
    settings, which is faster and bounded by the small size. The caller must pass every element
    it is done with to `release`.

    `trim` (whole files only) may cut bytes the caller never reads before libxml2 parses them:
    given the file's bytes it returns None, or the bytes to parse and a check that the tree they
    gave is one the caller reads exactly as the whole file's. Where they do not parse or the
    check fails, the whole file is parsed (so a malformed file reports its true position).
    """
    path = Path(path)
    stream, raw = open_binary(path)
    try:
        data = _whole_file(raw, limits) if stream is raw else None
        if data is not None:
            root = _parse_trimmed(data, path, trim) if trim is not None else None
            if root is None:
                # The bytes already read for the count: parsing them costs no second read.
                root = etree.fromstring(data, safe_parser(), base_url=str(path))
            check_entities(root, path)
            # Records are the root itself (a single JATS article) or children of the root
            # (PubmedArticleSet, MedlineCitationSet, pmc-articleset): no need to walk the tree.
            wanted = tuple(tags)
            yield from [root] if root.tag in wanted else list(root.iterchildren(*wanted))
            return
        checked = False
        guarded = GuardedStream(stream, path, limits)
        for element in _pulled(guarded, tuple(tags)):
            if not checked:
                check_entities(element, path)
                checked = True
            yield element
            # The caller is done with it: release it (again: cheap), and count from here.
            release(element)
            guarded.released()
    except etree.XMLSyntaxError as e:
        line, col = e.position if e.position else (e.lineno, 0)
        read = f" (after {raw.tell()} bytes of the file)" if raw.tell() > 2 else ""
        raise XMLParseError(
            f"{path}: malformed XML at line {line}, column {col}{read}: {e.msg}"
        ) from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise XMLParseError(
            f"{path}: truncated or corrupt gzip after {raw.tell()} compressed bytes: {e}"
        ) from e
    finally:
        stream.close()
        raw.close()


def _pulled(guarded: GuardedStream, tags: tuple[str, ...]) -> Iterator[etree._Element]:
    """Each element with one of `tags`, once the slice of `guarded` holding its end tag has been
    parsed. Where a slice does not parse, the elements it completed before the error still come
    first, then the error (as `iterparse` did)."""
    parser = etree.XMLPullParser(events=("end",), tag=tags, **SAFE_PARSER_OPTIONS)
    error = None
    try:
        for data in guarded.slices():
            parser.feed(data)
            yield from (element for _, element in parser.read_events())
        parser.close()  # a file that ends early fails here
    except etree.XMLSyntaxError as e:
        error = e
    yield from (element for _, element in parser.read_events())  # before the error, or at close
    if error is not None:
        raise error


def _parse_trimmed(data: bytes, path: Path, trim: Trim) -> etree._Element | None:
    """The tree of `data` as `trim` cut it, or None where it cut nothing, the cut bytes do not
    parse or its check refuses the tree (the caller then parses `data` whole)."""
    trimmed = trim(data)
    if trimmed is None:
        return None
    cut, check = trimmed
    try:
        root = etree.fromstring(cut, safe_parser(), base_url=str(path))
    except etree.XMLSyntaxError:
        return None
    return root if check(root) else None


def _whole_file(raw: IO[bytes], limits: XMLLimits) -> bytes | None:
    """The bytes of this plain file, to parse whole, or None to stream it. Whole only when it is
    small enough that no node can pass the byte caps and the whole tree stays under the
    per-record node cap (a 4 MiB file of `&a;` is 1.4M nodes): counted here as an upper bound
    (`<` in comments too); a file over it streams, where the caps are checked exactly."""
    size = os.fstat(raw.fileno()).st_size
    cap = min(WHOLE_FILE_BYTES, limits.max_node_bytes, limits.max_bytes, limits.max_record_bytes)
    if size > cap:
        return None
    data = raw.read()
    raw.seek(0)  # so a parse error gives no read offset: the whole file was read here
    if len(data) <= limits.max_record_nodes:  # at most one node per byte: no need to count
        return data
    return data if count_nodes(data, 0, len(data)) <= limits.max_record_nodes else None


def release(element: etree._Element) -> None:
    """Free a processed element and every processed sibling before it, and before each of its
    ancestors: records are children of the root, but a file that nests them (records inside
    records, each deeper level behind a long run of siblings) must not keep those runs."""
    element.clear(keep_tail=False)
    node, parent = element, element.getparent()
    while parent is not None:
        while node.getprevious() is not None:
            del parent[0]
        node, parent = parent, parent.getparent()


def head(path: Path | str, n: int = 4096) -> bytes:
    """The first `n` bytes of the (decompressed) document: enough to see its root element."""
    stream, raw = open_binary(Path(path))
    try:
        return stream.read(n)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
        return b""  # the real parse reports the problem, with its position
    finally:
        stream.close()
        raw.close()


def text_of(element: etree._Element | None) -> str:
    """All text inside `element` (inline markup's text kept), whitespace collapsed."""
    if element is None:
        return ""
    # Fast paths: most titles and abstract parts are one text node with single spaces.
    if len(element) == 0:
        text = element.text or ""
    else:  # serialising as text runs in C: ~2.5x faster than joining itertext()
        text = etree.tostring(element, method="text", encoding="unicode", with_tail=False)
    return squeeze(text)


def squeeze(text: str) -> str:
    """Whitespace collapsed where there is a run of it (or a newline, tab, CR), else stripped."""
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()
