"""PubMed Central JATS (NLM Archiving/Publishing DTD, .nxml/.xml) -> `Document` records.

One file holds one `<article>` (the Cloud Service layout) or several (an efetch
`<pmc-articleset>`); both are read through `iter_elements` (safe settings; big or gzipped
files stream). A file parsed whole has its reference lists cut from the bytes first, where that
provably changes nothing that is read (`trim_reference_lists`): the bytes cut are not checked for
well-formedness any more. The body rules below run as one compiled XSLT (`_BODY_XSL`), or where
the install built it as C (`_pmc_fast.pyx`, the same output).

What the text keeps and leaves out (in this order: abstract, a blank line, body):

- Kept: the abstract(s) of `article-meta` (not the `graphical`, `teaser`, `toc` ones); a
  structured abstract's sections as `Title: text`; the body's section titles, each on its own
  line before the section's paragraphs (nested sections in document order); paragraphs
  (inline markup's text kept, in-text citation markers such as `[12]` kept as written); list
  items, boxed text and quotes (their paragraphs); figure and table captions as
  `Label Title Caption`, each on its own line where it sits (floats kept in `back` or
  `floats-group`, as many archives do, come after the body).
- Left out: table cells (`table`) and table footnotes; formulas (`disp-formula`,
  `inline-formula`, MathML `math`, `tex-math`, `alternatives`), the text around them kept;
  graphics and media and their alt-text, attributions and permissions; supplementary
  material; footnotes; code and preformatted blocks; everything else in `back`
  (references, acknowledgements, appendices, notes); sub-articles.

Identifiers: `pmcid` (normalised to `PMC<n>`), `pmid` and `doi` from `article-id`; where the XML
has none the caller's hints (the Cloud Service metadata) fill them in. Licence: the `license`
element's URL (`ali:license_ref`, `license_ref` or `xlink:href`), else its `license-type`,
else the caller's hint. Year: the earliest `pub-date/year`; published: the earliest `pub-date` as
YYYY-MM-DD, a missing (or seasonal) month or day read as 01: the earliest the article can have
appeared, so a date cut-off never drops an article it cannot show was published later.
Language: `xml:lang`, mapped to PubMed's ISO 639-2 codes where known.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
from lxml import etree

from mediswift.data.helpers import load_helper
from mediswift.data.shards import Document, write_sharded
from mediswift.data.xml import (
    DEFAULT_LIMITS,
    XMLLimits,
    XMLParseError,
    iter_elements,
    text_of,
)

XLINK = "{http://www.w3.org/1999/xlink}"
ALI = "{http://www.niso.org/schemas/ali/1.0/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MATHML = "{http://www.w3.org/1998/Math/MathML}math"

# Never read (the text that follows them inside a paragraph stays).
STRIP_TAGS = (
    "table",
    "table-wrap-foot",
    "disp-formula",
    "inline-formula",
    "tex-math",
    MATHML,
    "alternatives",
    "graphic",
    "inline-graphic",
    "media",
    "supplementary-material",
    "fn-group",
    "ref-list",
    "sub-article",
    # inside figures and tables: not part of the caption
    "alt-text",
    "long-desc",
    "attrib",
    "permissions",
    "object-id",
    # inside the body: footnotes, code, section metadata
    "fn",
    "preformat",
    "code",
    "sec-meta",
)
SKIP_ABSTRACT_TYPES = frozenset({"graphical", "teaser", "toc"})
# Abstracts whose own title is a heading worth keeping (a plain abstract's says "Abstract").
HEADED_ABSTRACT_TYPES = frozenset({"summary", "synopsis"})
# xml:lang -> the ISO 639-2 (bibliographic) code PubMed's <Language> uses.
LANGUAGES = {
    "en": "eng", "fr": "fre", "de": "ger", "es": "spa", "pt": "por", "it": "ita", "ru": "rus",
    "ja": "jpn", "zh": "chi", "nl": "dut", "ko": "kor", "pl": "pol", "tr": "tur",
}  # fmt: skip


@dataclass
class PmcStats:
    """What the parsed articles held (body elements only)."""

    articles: int = 0
    sections: int = 0
    figures: int = 0
    tables: int = 0
    paragraphs: int = 0


@dataclass(frozen=True)
class PmcHints:
    """Metadata from the download manifest, used where an article's XML lacks it."""

    pmcid: str | None = None
    pmid: str | None = None
    license: str | None = None


def normalise_pmcid(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    return value if value.upper().startswith("PMC") else f"PMC{value}"


# The body rules above as one XSLT, run by libxslt in C: faster than walking the tree from Python,
# and than writing the separators into the tree from Python and serialising it as text (measured:
# ~0.2 vs ~0.5 of the time libxml2 takes to parse the file). Block boundaries are written as a
# pair of private-use characters (never in real text) and split on afterwards. No document(), no
# file or network access.
#
# A caption's children are read in their own mode rather than by a `caption/*` rule: libxslt
# tries a rule that matches any name on every element it visits. A float that is itself a
# caption's child is read as one wherever it is selected, as `caption/*` read it. The floats
# are selected by descendant axes (`back//fig` visits every node of `back` twice). Measured: the
# two changes save ~4% of the stylesheet's time, with the same output on every mirror article.
SEP = "\ue000\ue001"
_SEP_UTF8 = SEP.encode()
FLOATS = ("fig", "table-wrap")
COUNTED = ("sec", "p", "fig", "table-wrap")
_SEP_XSL = "<xsl:text>&#xE000;&#xE001;</xsl:text>"  # a literal: cheaper than a variable
_LEFT_OUT = "|".join(t if t != MATHML else "mml:math" for t in STRIP_TAGS)
_BODY_XSL = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:mml="http://www.w3.org/1998/Math/MathML">
  <xsl:output method="text" encoding="UTF-8"/>
  <xsl:template match="/"><xsl:apply-templates select="article"/></xsl:template>
  <xsl:template match="article">
    <xsl:apply-templates select="body"/>
    <xsl:apply-templates select="back/descendant::fig|back/descendant::table-wrap|floats-group/descendant::fig|floats-group/descendant::table-wrap"/>
  </xsl:template>
  <xsl:template match="sec/label">{_SEP_XSL}<xsl:apply-templates/><xsl:text> </xsl:text></xsl:template>
  <xsl:template match="sec/title"><xsl:if test="not(../label)">{_SEP_XSL}</xsl:if><xsl:apply-templates/>{_SEP_XSL}</xsl:template>
  <xsl:template match="p|list-item|disp-quote|boxed-text|statement|def-item">{_SEP_XSL}<xsl:apply-templates/>{_SEP_XSL}</xsl:template>
  <xsl:template match="fig|table-wrap">{_SEP_XSL}<xsl:apply-templates select="label"/><xsl:text> </xsl:text><xsl:apply-templates select="caption"/>{_SEP_XSL}</xsl:template>
  <xsl:template match="caption"><xsl:apply-templates mode="caption"/></xsl:template>
  <xsl:template match="*" mode="caption"><xsl:apply-templates/><xsl:text> </xsl:text></xsl:template>
  <xsl:template match="caption/fig|caption/table-wrap" priority="2"><xsl:apply-templates select="." mode="caption"/></xsl:template>
  <xsl:template match="{_LEFT_OUT}" priority="3"/>
  <xsl:template match="{_LEFT_OUT}" mode="caption" priority="3"/>
</xsl:stylesheet>"""
_local = threading.local()  # an XSLT object per thread (Prefect runs tasks in threads)

# The compiled helper (`_pmc_fast.pyx`: the stylesheet as one tree walk, the counts, the split and
# the cut check in C) where the install built it, against the lxml in use: it reads lxml's
# element struct. It gives exactly what the Python path below gives (tests/test_pmc_body.py runs
# both), ~1.3x faster in all.
_fast = load_helper("_pmc_fast")


def _body_xslt() -> etree.XSLT:
    if not hasattr(_local, "xslt"):
        doc = etree.XML(_BODY_XSL.encode(), etree.XMLParser(resolve_entities=False))
        _local.xslt = etree.XSLT(doc, access_control=etree.XSLTAccessControl.DENY_ALL)
    return _local.xslt


_NL, _TAB, _CR, _SPACE = b"\n\t\r "


def _runs(text: bytes, pieces: list[bytes]) -> list[bool]:
    """For each piece of `text` (split on the separator), whether it holds two spaces in a row,
    a newline, a tab or a carriage return. Found for the whole text at once with numpy: an `in`
    test per piece and character costs a scan of the text each (two spaces: a slow one)."""
    chars = np.frombuffer(text, np.uint8)
    marked = (chars == _NL) | (chars == _TAB) | (chars == _CR)
    space = chars == _SPACE
    marked[:-1] |= space[:-1] & space[1:]
    at = np.flatnonzero(marked)
    if len(at) == 0:
        return [False] * len(pieces)
    sizes = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ends = np.cumsum(sizes + len(_SEP_UTF8)) - len(_SEP_UTF8)
    first = np.searchsorted(at, ends - sizes)  # the first marked character from each start
    return ((first < len(at)) & (at[np.minimum(first, len(at) - 1)] < ends)).tolist()


def _lines(text: bytes) -> list[str]:
    """The blocks between separators, whitespace collapsed where a run of it (or a newline,
    tab, CR) exists, else stripped (splitting every word is the slow path); empty ones go."""
    pieces = text.split(_SEP_UTF8)
    lines = []
    for piece, run in zip(pieces, _runs(text, pieces), strict=True):
        if not piece or piece.isspace():  # half of them: the whitespace between two blocks
            continue
        line = " ".join(piece.decode().split()) if run else piece.decode().strip()
        if line:
            lines.append(line)
    return lines


_TAG = attrgetter("tag")


def _first(el: etree._Element, tag: str) -> etree._Element | None:
    return next(el.iterchildren(tag), None)


def _count(article: etree._Element, stats: PmcStats) -> None:
    """Sections and paragraphs of the first body; figures and tables of the first body, back
    and floats group (before anything is left out). One walk each, counted here: the same
    counts as XPath in the stylesheet walked the body four times."""
    counts: Counter[str] = Counter()
    body = _first(article, "body")
    if body is not None:
        counts.update(map(_TAG, body.iter(*COUNTED)))
    for tag in ("floats-group", "back"):
        outside = _first(article, tag)
        if outside is not None:
            counts.update(map(_TAG, outside.iter(*FLOATS)))
    stats.sections += counts["sec"]
    stats.paragraphs += counts["p"]
    stats.figures += counts["fig"]
    stats.tables += counts["table-wrap"]


def body_lines(article: etree._Element, stats: PmcStats) -> list[str]:
    """Body lines (section titles, paragraphs, captions) and the captions of floats kept in
    `back` / `floats-group`, per the module docstring; counts what it reads into `stats`."""
    if _fast is None:
        _count(article, stats)
        return _lines(bytes(_body_xslt()(article)))
    sections, paragraphs, figures, tables = _fast.count(article)
    stats.sections += sections
    stats.paragraphs += paragraphs
    stats.figures += figures
    stats.tables += tables
    return _fast.lines(_fast.body_text(article))


def abstract_text(meta: etree._Element) -> str:
    lines = []
    for abstract in meta.iterchildren("abstract"):
        if abstract.get("abstract-type") in SKIP_ABSTRACT_TYPES:
            continue
        for child in abstract:
            if child.tag == "title" and abstract.get("abstract-type") in HEADED_ABSTRACT_TYPES:
                # An author summary or synopsis is headed by its title ("Author Summary"):
                # keep it, as the headings of structured abstracts are kept.
                lines.append(text_of(child))
            elif child.tag == "sec":
                title = text_of(_first(child, "title"))
                body = " ".join(text_of(p) for p in child.iter("p"))
                lines.append(f"{title}: {body}" if title and body else title or body)
            elif child.tag == "p":
                lines.append(text_of(child))
    return "\n".join(line for line in lines if line)


# Children are found with `iterchildren` rather than `find`/`findtext`: lxml's ElementPath costs
# a few microseconds a call, which added up to a tenth of an article's time.
def _child_text(el: etree._Element, tag: str) -> str | None:
    """`el.findtext(tag)`: the first such child's text ("" where it has none), else None."""
    child = _first(el, tag)
    return None if child is None else child.text or ""


def _path(el: etree._Element, parent: str, child: str) -> etree._Element | None:
    """`el.find("parent/child")`."""
    return next((c for p in el.iterchildren(parent) for c in p.iterchildren(child)), None)


def _license(meta: etree._Element) -> str | None:
    lic = next(meta.iter("license"), None)
    if lic is None:
        return None
    url = (
        _child_text(lic, f"{ALI}license_ref")
        or _child_text(lic, "license_ref")
        or lic.get(f"{XLINK}href")
        or ""
    ).strip()
    return url or lic.get("license-type") or None


def _year(meta: etree._Element) -> int | None:
    years = [
        int(y.text)
        for d in meta.iterchildren("pub-date")
        for y in d.iterchildren("year")
        if y.text and y.text.strip().isdigit()
    ]
    return min(years) if years else None


def _number(el: etree._Element, tag: str) -> int:
    """A pub-date part as a number; 1 where it is missing or not a number (a season)."""
    text = (_child_text(el, tag) or "").strip()
    return int(text) if text.isdigit() else 1


def _published(meta: etree._Element) -> str | None:
    """The earliest `pub-date` (epub, ppub, collection, ...) as YYYY-MM-DD, or None."""
    dates = []
    for d in meta.iterchildren("pub-date"):
        year = (_child_text(d, "year") or "").strip()
        if year.isdigit() and len(year) == 4:
            month, day = _number(d, "month"), _number(d, "day")
            if 1 <= month <= 12 and 1 <= day <= 31:
                dates.append(f"{year}-{month:02d}-{day:02d}")
    return min(dates) if dates else None


def article_document(
    article: etree._Element, hints: PmcHints = PmcHints(), stats: PmcStats | None = None
) -> Document:
    """One JATS `<article>` element as a Document (the element is modified: formulas etc. go)."""
    stats = stats if stats is not None else PmcStats()
    meta = _path(article, "front", "article-meta")
    if meta is None:
        raise ValueError("article without front/article-meta")
    ids: dict[str, str] = {}
    for aid in meta.iterchildren("article-id"):
        kind, value = aid.get("pub-id-type"), (aid.text or "").strip()
        if kind and value:
            ids.setdefault(kind, value)
    pmcid = normalise_pmcid(ids.get("pmc") or ids.get("pmcid")) or normalise_pmcid(hints.pmcid)
    if pmcid is None:
        raise ValueError("article without a PMCID (none in the XML, none in the metadata)")
    license = _license(meta)
    lines = body_lines(article, stats)
    etree.strip_elements(meta, *STRIP_TAGS, with_tail=False)  # formulas in the abstract
    abstract = abstract_text(meta)
    stats.articles += 1
    lang = article.get(XML_LANG)
    return Document(
        doc_id=f"pmc:{pmcid}",
        source="pmc",
        pmcid=pmcid,
        pmid=ids.get("pmid") or hints.pmid,
        doi=ids.get("doi"),
        title=text_of(_path(meta, "title-group", "article-title")),
        text="\n\n".join(t for t in (abstract, "\n".join(lines)) if t),
        year=_year(meta),
        published=_published(meta),
        language=LANGUAGES.get(lang.lower(), lang) if lang else None,
        pub_types=[article.get("article-type")] if article.get("article-type") else [],
        license=license or hints.license,
    )


# A third of a PMC file's bytes are its reference lists, and nothing in them is read (`back` is
# read only for its figures and tables). So they are cut from the bytes before libxml2 parses
# them: the parse, the largest cost, shrinks by 40%. The cut runs from the first `<ref-list` to
# the end of the last `</ref-list>`, replaced by an empty `ref-list` carrying a token no file can
# hold, and is kept only where the tree shows it lay inside an article's `back`:
# - its bytes hold no CDATA section, processing instruction or DOCTYPE (`<!`, `<?`: a tag inside
#   one is no tag), only comments that end inside it, no tag of a figure or table (start or
#   end), and no `</back`;
# - libxml2 parses the result, which needs the same open elements (by name) after the cut as
#   at its start (every end tag after it must match), and the placeholder is found as an element
#   inside the `back` of an article, not inside a figure or table. That `back` was open at the
#   start of the cut and is not closed inside it, so everything cut or rearranged lay inside it:
#   no figure or table is touched, and nothing else in `back` is read or counted.
# Otherwise the whole file is parsed. Not checked any more: whether the cut bytes are themselves
# well-formed (a truncated file still fails: its last `</ref-list>` and the rest are missing).
_CUT_ATTR = "cut"
_CUT_TOKEN = secrets.token_hex(16)
_PLACEHOLDER = f'<ref-list {_CUT_ATTR}="{_CUT_TOKEN}"/>'.encode()
_REF_LIST_END = re.compile(rb"</ref-list\s*>")
_NAME_END = (b" ", b"\t", b"\r", b"\n", b"/", b">")  # what may follow a tag's name
_LT, _BANG, _QUERY, _SLASH = b"<!?/"
# The first two letters of the names a cut must not hold a tag of (`fi`g, `ta`ble-wrap, and
# `ba`ck, end tag only), as one 16-bit number each.
_FI, _TA, _BA = (int.from_bytes(n, "big") for n in (b"fi", b"ta", b"ba"))
_FORBIDDEN = (b"<!", b"<?", b"<fig", b"</fig", b"<table-wrap", b"</table-wrap", b"</back")


def _ref_list_span(data: bytes) -> tuple[int, int] | None:
    """From the first `<ref-list` start tag after the last `<back` before the last
    `</ref-list>` (from the file's start where there is no such `<back`) to the end of that
    `</ref-list>`, or None. Searched from the end: the reference lists close an article, and a
    search from the start scans the whole body first (a fifth of a parse's time). Which span is
    tried changes only speed: the checks above decide whether a cut is kept."""
    end = data.rfind(b"</ref-list")
    closed = _REF_LIST_END.match(data, end) if end >= 0 else None
    if closed is None:
        return None
    back = data.rfind(b"<back", 0, end)
    while back >= 0 and data[back + 5 : back + 6] not in _NAME_END:
        back = data.rfind(b"<back", 0, back)
    start = data.find(b"<ref-list", max(back, 0), end)
    while start >= 0 and data[start + 9 : start + 10] not in _NAME_END:
        start = data.find(b"<ref-list", start + 1, end)
    return None if start < 0 else (start, closed.end())


def _cuttable(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end] holds none of the tags named in `_FORBIDDEN`, and only comments
    that end inside it (a well-formed comment holds no `--`, so it ends at the first `-->`; a
    tag inside a comment is refused too). The bytes after every `<` are looked at with numpy (a
    regular expression stopping at each of the thousands of tags costs twice as much); the few
    names that begin like a forbidden one are compared."""
    seg = np.frombuffer(data, np.uint8, end - start, start)
    at = np.flatnonzero(seg[:-3] == _LT)
    c1, c2, c3 = seg[at + 1], seg[at + 2], seg[at + 3]
    closing = c1 == _SLASH
    name = np.where(closing, c2, c1).astype(np.uint16) << 8 | np.where(closing, c3, c2)
    maybe = (c1 == _BANG) | (c1 == _QUERY) | (name == _FI) | (name == _TA)
    maybe |= closing & (name == _BA)
    comment_end = start
    for i in at[maybe].tolist():
        pos = start + i
        if pos >= comment_end and data.startswith(b"<!--", pos):
            close = data.find(b"-->", pos + 4, end)
            if close < 0:
                return False
            comment_end = close + 3
        elif data.startswith(_FORBIDDEN, pos):
            return False
    return True


def _records(root: etree._Element) -> Iterator[etree._Element]:
    """The articles `iter_elements` yields from a whole file."""
    return iter([root]) if root.tag == "article" else root.iterchildren("article")


def _cut_inside_back(root: etree._Element) -> bool:
    """Whether the placeholder of the one cut is an element inside an article's `back` (see
    above), and not inside a figure or table."""
    found = 0
    for article in _records(root):
        for back in article.iterchildren("back"):
            for el in back.iter("ref-list"):
                if el.get(_CUT_ATTR) != _CUT_TOKEN:
                    continue
                found += 1
                parent = el.getparent()
                while parent is not back:
                    if parent is None or parent.tag in FLOATS:
                        return False
                    parent = parent.getparent()
    return found == 1


def trim_reference_lists(
    data: bytes,
) -> tuple[bytes, Callable[[etree._Element], bool]] | None:
    """The bytes with the reference lists cut (see above) and the check of the tree they give,
    or None where nothing may be cut."""
    span = _ref_list_span(data)
    if span is None or not (_cuttable if _fast is None else _fast.cuttable)(data, *span):
        return None
    start, end = span
    return data[:start] + _PLACEHOLDER + data[end:], _cut_inside_back


def iter_pmc(
    path: Path | str,
    hints: PmcHints = PmcHints(),
    stats: PmcStats | None = None,
    limits: XMLLimits = DEFAULT_LIMITS,
) -> Iterator[Document]:
    """The articles of one JATS file, in file order. `hints` apply to its first article only
    (a Cloud Service file holds exactly one). A file over the size caps of `limits` raises
    `XMLLimitError` while it streams."""
    # `iter_elements` releases each streamed article once the next is asked for; a file parsed
    # whole is freed with its document (releasing it first would walk the tree twice more).
    articles = iter_elements(path, ("article",), limits, trim=trim_reference_lists)
    for i, article in enumerate(articles):
        try:
            doc = article_document(article, hints if i == 0 else PmcHints(), stats)
        except ValueError as e:
            raise ValueError(f"{path}: article {i + 1}: {e}") from e
        yield doc


@dataclass(frozen=True)
class PmcInput:
    """One article file of a batch: where it is, how to name it in reports, its metadata."""

    path: Path
    label: str
    hints: PmcHints = PmcHints()


def parse_pmc_batch(
    articles: Sequence[PmcInput],
    out_dir: Path,
    rows_per_shard: int,
    quarantine: bool = False,
    limits: XMLLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Parse a batch of PMC article files into document shards under `out_dir`.

    A bad file fails the batch (no shard is left), or with `quarantine` is listed in
    "quarantined" and left out while the rest of the batch is written. Each file is read
    completely before any of its articles is written, so a file is in or out as a whole; a file
    over the size caps of `limits` is a bad file like any other.
    """
    stats = PmcStats()
    quarantined: list[dict[str, str]] = []

    def docs() -> Iterator[Document]:
        for a in articles:
            try:
                file_docs = list(iter_pmc(a.path, a.hints, stats, limits))
            except (XMLParseError, ValueError, OSError) as e:
                if not quarantine:
                    raise
                quarantined.append({"input": a.label, "error": str(e)})
                continue
            yield from file_docs

    shards = write_sharded(docs(), out_dir, rows_per_shard)
    return {"shards": shards, "quarantined": quarantined, "counts": asdict(stats)}
