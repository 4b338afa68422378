"""PubMed Central JATS (NLM Archiving/Publishing DTD, .nxml/.xml) -> `Document` records.

One file holds one `<article>` (the Cloud Service layout) or several (an efetch
`<pmc-articleset>`); both are read through `iter_elements` (safe settings; big or gzipped
files stream). The body rules below run as one compiled XSLT (`_BODY_XSL`).

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

import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lxml import etree

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


# The body rules above as one XSLT, run by libxslt in C (several times faster than walking
# the tree from Python). Block boundaries are written as a pair of private-use characters
# (never in real text) and split on afterwards. No document(), no file or network access.
SEP = "\ue000\ue001"
_LEFT_OUT = "|".join(t if t != MATHML else "mml:math" for t in STRIP_TAGS)
_BODY_XSL = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:mml="http://www.w3.org/1998/Math/MathML">
  <xsl:output method="text" encoding="UTF-8"/>
  <xsl:variable name="sep">&#xE000;&#xE001;</xsl:variable>
  <xsl:template match="/"><xsl:apply-templates select="article"/></xsl:template>
  <xsl:template match="article">
    <xsl:value-of select="concat(count(body[1]//sec), ' ', count(body[1]//p), ' ',
      count(body[1]//fig) + count(floats-group[1]//fig) + count(back[1]//fig), ' ',
      count(body[1]//table-wrap) + count(floats-group[1]//table-wrap)
      + count(back[1]//table-wrap), $sep)"/>
    <xsl:apply-templates select="body"/>
    <xsl:apply-templates select="floats-group//fig|floats-group//table-wrap|back//fig|back//table-wrap"/>
  </xsl:template>
  <xsl:template match="sec/label"><xsl:value-of select="$sep"/><xsl:apply-templates/><xsl:text> </xsl:text></xsl:template>
  <xsl:template match="sec/title"><xsl:if test="not(../label)"><xsl:value-of select="$sep"/></xsl:if><xsl:apply-templates/><xsl:value-of select="$sep"/></xsl:template>
  <xsl:template match="p|list-item|disp-quote|boxed-text|statement|def-item"><xsl:value-of select="$sep"/><xsl:apply-templates/><xsl:value-of select="$sep"/></xsl:template>
  <xsl:template match="fig|table-wrap"><xsl:value-of select="$sep"/><xsl:apply-templates select="label"/><xsl:text> </xsl:text><xsl:apply-templates select="caption"/><xsl:value-of select="$sep"/></xsl:template>
  <xsl:template match="caption/*" priority="2"><xsl:apply-templates/><xsl:text> </xsl:text></xsl:template>
  <xsl:template match="{_LEFT_OUT}" priority="3"/>
</xsl:stylesheet>"""
_local = threading.local()  # an XSLT object per thread (Prefect runs tasks in threads)


def _body_xslt() -> etree.XSLT:
    if not hasattr(_local, "xslt"):
        doc = etree.XML(_BODY_XSL.encode(), etree.XMLParser(resolve_entities=False))
        _local.xslt = etree.XSLT(doc, access_control=etree.XSLTAccessControl.DENY_ALL)
    return _local.xslt


def _squeeze(text: str) -> str:
    """Collapse whitespace runs (splitting every word is the slow path: take it only when a
    run exists)."""
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()


def body_lines(article: etree._Element, stats: PmcStats) -> list[str]:
    """Body lines (section titles, paragraphs, captions) and the captions of floats kept in
    `back` / `floats-group`, per the module docstring; counts what it reads into `stats`."""
    text = str(_body_xslt()(article))
    # The stylesheet leads with the counts: walking the tree for them from Python cost a
    # quarter of the body pass.
    counts, _, text = text.partition(SEP)
    sections, paragraphs, figures, tables = (int(n) for n in counts.split())
    stats.sections += sections
    stats.paragraphs += paragraphs
    stats.figures += figures
    stats.tables += tables
    return [_squeeze(b) for b in text.split(SEP) if b and not b.isspace()]


def abstract_text(meta: etree._Element) -> str:
    lines = []
    for abstract in meta.iterfind("abstract"):
        if abstract.get("abstract-type") in SKIP_ABSTRACT_TYPES:
            continue
        for child in abstract:
            if child.tag == "title" and abstract.get("abstract-type") in HEADED_ABSTRACT_TYPES:
                # An author summary or synopsis is headed by its title ("Author Summary"):
                # keep it, as the headings of structured abstracts are kept.
                lines.append(text_of(child))
            elif child.tag == "sec":
                title = text_of(child.find("title"))
                body = " ".join(text_of(p) for p in child.iter("p"))
                lines.append(f"{title}: {body}" if title and body else title or body)
            elif child.tag == "p":
                lines.append(text_of(child))
    return "\n".join(line for line in lines if line)


def _license(meta: etree._Element) -> str | None:
    lic = meta.find(".//license")
    if lic is None:
        return None
    url = (
        lic.findtext(f"{ALI}license_ref")
        or lic.findtext("license_ref")
        or lic.get(f"{XLINK}href")
        or ""
    ).strip()
    return url or lic.get("license-type") or None


def _year(meta: etree._Element) -> int | None:
    years = [
        int(y.text) for y in meta.iterfind("pub-date/year") if y.text and y.text.strip().isdigit()
    ]
    return min(years) if years else None


def _number(el: etree._Element, tag: str) -> int:
    """A pub-date part as a number; 1 where it is missing or not a number (a season)."""
    text = (el.findtext(tag) or "").strip()
    return int(text) if text.isdigit() else 1


def _published(meta: etree._Element) -> str | None:
    """The earliest `pub-date` (epub, ppub, collection, ...) as YYYY-MM-DD, or None."""
    dates = []
    for d in meta.iterfind("pub-date"):
        year = (d.findtext("year") or "").strip()
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
    meta = article.find("front/article-meta")
    if meta is None:
        raise ValueError("article without front/article-meta")
    ids: dict[str, str] = {}
    for aid in meta.iterfind("article-id"):
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
        title=text_of(meta.find("title-group/article-title")),
        text="\n\n".join(t for t in (abstract, "\n".join(lines)) if t),
        year=_year(meta),
        published=_published(meta),
        language=LANGUAGES.get(lang.lower(), lang) if lang else None,
        pub_types=[article.get("article-type")] if article.get("article-type") else [],
        license=license or hints.license,
    )


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
    for i, article in enumerate(iter_elements(path, ("article",), limits)):
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
