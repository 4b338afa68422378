"""Safe, streaming XML reading shared by the PubMed and PMC parsers.

Every XML file goes through `iter_elements`: `lxml.etree.iterparse` with entity expansion, DTD
loading and network access switched off and lxml's size limits left on (`huge_tree=False`).
Two more guards:

- A document whose internal DTD subset declares entities (the XXE and billion-laughs shapes) is
  refused with `UnsafeXMLError` before any of its text is used. PubMed and PMC files only ever
  carry an external DOCTYPE line, so real files never trip it. libxml2's amplification limit
  stops a billion-laughs file even earlier, as a syntax error.
- Parse and decompression errors (malformed XML, a truncated gzip) become `XMLParseError`, which
  names the file and the position (line and column of the XML, or compressed bytes read).

Memory stays flat because the caller hands every finished element back to `release`, which
clears it and deletes the already processed siblings before it, so the tree never grows.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from lxml import etree

# The only parser settings used for untrusted XML anywhere in the project.
SAFE_PARSER_OPTIONS: dict[str, bool] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}

GZIP_MAGIC = b"\x1f\x8b"
# Plain files up to this size are parsed whole (see `iter_elements`).
WHOLE_FILE_BYTES = 4 << 20


class XMLParseError(ValueError):
    """A file that is not well-formed XML (or not a complete gzip stream)."""


class UnsafeXMLError(XMLParseError):
    """A file that declares DTD entities (possible XXE or entity-expansion attack)."""


_local = threading.local()


def safe_parser() -> etree.XMLParser:
    """A whole-document parser with the same settings (one per thread: lxml parsers must not
    be shared between threads, and making one per file costs time)."""
    if not hasattr(_local, "parser"):
        _local.parser = etree.XMLParser(**SAFE_PARSER_OPTIONS)
    return _local.parser


def open_binary(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(stream to parse, raw file): gzip is detected by its magic bytes, not the file name."""
    raw = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
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


def iter_elements(path: Path | str, tags: Iterable[str]) -> Iterator[etree._Element]:
    """Yield each element whose tag is in `tags` (in document order; tags must not nest, and
    records must be the root or its children, as in every PubMed and PMC format).

    Files larger than `WHOLE_FILE_BYTES` and every gzip file stream through `iterparse`, so
    memory stays flat whatever their size. Smaller plain files (a PMC article, an efetch reply)
    are parsed whole by libxml2 with the same settings, which is faster and bounded by the
    small size. The caller must pass every element it is done with to `release`.
    """
    path = Path(path)
    stream, raw = open_binary(path)
    try:
        if stream is raw and path.stat().st_size <= WHOLE_FILE_BYTES:
            root = etree.parse(str(path), safe_parser()).getroot()
            check_entities(root, path)
            # Records are the root itself (a single JATS article) or children of the root
            # (PubmedArticleSet, MedlineCitationSet, pmc-articleset): no need to walk the tree.
            wanted = tuple(tags)
            yield from [root] if root.tag in wanted else list(root.iterchildren(*wanted))
            return
        checked = False
        context = etree.iterparse(stream, events=("end",), tag=tuple(tags), **SAFE_PARSER_OPTIONS)
        for _, element in context:
            if not checked:
                check_entities(element, path)
                checked = True
            yield element
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


def release(element: etree._Element) -> None:
    """Free a processed element and every processed sibling before it."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


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
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()
