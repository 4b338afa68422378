"""PubMed/MEDLINE XML (baseline and update files, efetch output) -> `Document` records.

Streams with `iter_elements` (constant memory whatever the file size) and reads:

- `PubmedArticle` (`MedlineCitation` + `PubmedData`), `PubmedBookArticle` (`BookDocument`), and
  the pre-2017 `MedlineCitationSet` format whose records are bare `MedlineCitation` elements;
- `DeleteCitation/PMID`: PMIDs the file deletes, collected into `PubmedStats.deleted`.

Fields: PMID and its Version; title (`ArticleTitle`, else `VernacularTitle`; books: the chapter's
`ArticleTitle`, else `BookTitle`); the abstract: every `AbstractText` of `Abstract` in order,
a labelled part as `LABEL: text` (not PubMed's placeholder label `UNLABELLED`), inline markup's
text kept, parts joined by newlines (`OtherAbstract`, usually a translation, is not used); year:
the earliest of the issue's (`PubDate/Year`, else the first year in `MedlineDate`) and the
electronic publication's (`ArticleDate/Year`), as the PMC parser takes the earliest `pub-date`
(books: `PubDate`, else `ContributionDate`); revised: `DateRevised` as YYYY-MM-DD (the last
time NLM changed the record: the snapshot cut-off reads it; books have none); the first
`Language`; publication types; DOI and PMCID from the article ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from mediswift.data.helpers import load_helper
from mediswift.data.shards import Document, write_sharded
from mediswift.data.xml import DEFAULT_LIMITS, XMLLimits, head, iter_elements, squeeze, text_of

# The compiled helper (`_pubmed_fast.pyx`: a PubmedArticle's fields read in C) where the install
# built it against the lxml in use (it reads lxml's element struct). The Document is the same
# as the Python path's (tests/test_pubmed.py runs both).
_fast = load_helper("_pubmed_fast")

RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
LEGACY_TAGS = ("MedlineCitation", "DeleteCitation")  # MedlineCitationSet (before 2017)


@dataclass
class PubmedStats:
    """What a file held, filled in while its documents are read."""

    articles: int = 0  # PubmedArticle
    book_articles: int = 0  # PubmedBookArticle
    citations: int = 0  # bare MedlineCitation (legacy MedlineCitationSet files)
    no_abstract: int = 0
    deleted: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return self.articles + self.book_articles + self.citations

    def as_dict(self) -> dict[str, int]:
        return {
            "PubmedArticle": self.articles,
            "PubmedBookArticle": self.book_articles,
            "MedlineCitation": self.citations,
            "no_abstract": self.no_abstract,
            "deleted": len(self.deleted),
        }


def _year(text: str | None) -> int | None:
    """The first four-digit year in `text` ('2019', '1998 Dec-1999 Jan', 'Spring 2001')."""
    if not text:
        return None
    if len(text) == 4 and text.isdigit():
        return int(text)
    for i in range(len(text) - 3):
        chunk = text[i : i + 4]
        if chunk.isdigit() and (i + 4 == len(text) or not text[i + 4].isdigit()):
            return int(chunk)
    return None


def _first(parent: etree._Element, tag: str) -> etree._Element | None:
    """The first child with `tag`, as `find(tag)` gives it: a loop over a few children costs a
    third of `find`, whose path machinery dominates at this size."""
    for child in parent:
        if child.tag == tag:
            return child
    return None


def _child_texts(el: etree._Element, *tags: str) -> list[str | None]:
    """The text of the first child with each of `tags`, as `findtext` reads it ("" for none),
    None where there is no such child: one pass over the few children of a date."""
    texts: list[str | None] = [None] * len(tags)
    for child in el:
        tag = child.tag
        if tag in tags:
            i = tags.index(tag)
            if texts[i] is None:
                texts[i] = child.text or ""
    return texts


def _date(el: etree._Element | None) -> str | None:
    """A PubMed date element (Year, Month, Day) as YYYY-MM-DD, or None when it has no year."""
    return None if el is None else _date_of(*_child_texts(el, "Year", "Month", "Day"))


def _date_of(year_text: str | None, month: str | None, day: str | None) -> str | None:
    year = _year(year_text)
    if year is None:
        return None
    try:
        return f"{year:04d}-{int(month or 1):02d}-{int(day or 1):02d}"
    except ValueError:  # a named month ('Sep'): the date is still ordered by its year
        return f"{year:04d}-01-01"


def abstract_text(abstract: etree._Element | None) -> str:
    """Every AbstractText in order; labelled parts as 'LABEL: text'; parts joined by newlines."""
    if abstract is None:
        return ""
    return _abstract_of((p.get("Label"), text_of(p)) for p in abstract if p.tag == "AbstractText")


def _abstract_of(labelled: Iterable[tuple[str | None, str]]) -> str:
    """The abstract from each AbstractText's Label and text."""
    parts = []
    for label, text in labelled:
        if label and label.strip().upper() == "UNLABELLED":
            label = None  # PubMed's placeholder for a part without a heading, not a heading
        if label and text:
            text = f"{label}: {text}"
        elif label:
            text = label
        if text:
            parts.append(text)
    return "\n".join(parts)


def _pmid(el: etree._Element | None) -> tuple[str, int]:
    return _pmid_of(None, None) if el is None else _pmid_of(el.text, el.get("Version"))


def _pmid_of(text: str | None, version: str | None) -> tuple[str, int]:
    if not (text or "").strip():
        raise ValueError("record without a PMID")
    assert text is not None
    return text.strip(), int(version or 1)


def _ids(pubmed_data: etree._Element | None, doc: Document) -> None:
    """The PMCID and (when the article gave none) the DOI from `ArticleIdList/ArticleId`; the
    tag filters of `iterchildren` run in C, so the history and references are skipped there."""
    if pubmed_data is None:
        return
    for ids in pubmed_data.iterchildren("ArticleIdList"):
        for aid in ids.iterchildren("ArticleId"):
            kind = aid.get("IdType")
            if kind == "pmc" and doc.pmcid is None and aid.text:
                doc.pmcid = aid.text.strip()
            elif kind == "doi" and doc.doi is None and aid.text:
                doc.doi = aid.text.strip()


def _firsts(parent: etree._Element, wanted: frozenset[str]) -> dict[str, etree._Element]:
    """The first child of `parent` with each tag in `wanted`, as `find` gives them; stops once
    it has one of each (a citation's PMID, DateRevised and Article lead its ~10 children)."""
    found: dict[str, etree._Element] = {}
    for child in parent:
        tag = child.tag
        if tag in wanted and tag not in found:
            found[tag] = child
            if len(found) == len(wanted):
                break
    return found


# The children each level's fields come from.
RECORD_PARTS = frozenset({"MedlineCitation", "PubmedData"})
CITATION_FIELDS = frozenset({"PMID", "Article", "DateRevised"})


def _pub_date(journal: etree._Element) -> etree._Element | None:
    """`JournalIssue/PubDate` of one `Journal`: the first, in document order."""
    for issue in journal:
        if issue.tag == "JournalIssue" and (date := _first(issue, "PubDate")) is not None:
            return date
    return None


def _child_text(parent: etree._Element, tag: str) -> str | None:
    """`findtext(tag)`: the text of the first child with `tag` ("" for none), None without one."""
    child = _first(parent, tag)
    return None if child is None else child.text or ""


def _issue_year(date: etree._Element | None) -> int | None:
    """The year of `PubDate`: its `Year`, else the first year in its `MedlineDate`."""
    if date is None:
        return None
    year, medline = _child_texts(date, "Year", "MedlineDate")
    return _year(year) or _year(medline)


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _doi(location: etree._Element) -> str | None:
    """The DOI an `ELocationID` gives, or None."""
    text = location.text
    return text.strip() if text and location.get("EIdType") == "doi" else None


def _pub_types(types: etree._Element) -> list[str]:
    return [t.text for t in types if t.tag == "PublicationType" and t.text]


def _read_article(article: etree._Element, doc: Document) -> None:
    """Title, abstract, year, language, publication types and DOI from `Article`, in one pass
    over its children (a `find` per field costs about as much as the whole pass). A field read
    from one child takes the first child with its tag, as `find` does; the issue date comes
    from the first `Journal` that has one and the electronic one from the first `ArticleDate`
    with a `Year`."""
    title = vernacular = abstract = date = None
    e_year = language = None
    for child in article:
        tag = child.tag
        if tag == "ArticleTitle":
            title = child if title is None else title
        elif tag == "Abstract":
            abstract = child if abstract is None else abstract
        elif tag == "Journal":
            date = _pub_date(child) if date is None else date
        elif tag == "ELocationID":
            doc.doi = _doi(child) if doc.doi is None else doc.doi
        elif tag == "Language":
            language = (child.text or "") if language is None else language
        elif tag == "PublicationTypeList":
            doc.pub_types += _pub_types(child)
        elif tag == "VernacularTitle":
            vernacular = child if vernacular is None else vernacular
        elif tag == "ArticleDate":
            e_year = _child_text(child, "Year") if e_year is None else e_year
    doc.title = text_of(title) or text_of(vernacular)
    doc.text = abstract_text(abstract)
    # The earliest year the record gives (issue date or electronic publication), the rule the
    # PMC parser uses for its `pub-date`s too.
    doc.year = _earliest(_year(e_year), _issue_year(date))
    doc.language = language


def citation_document(citation: etree._Element, pubmed_data: etree._Element | None) -> Document:
    """A `MedlineCitation` (with its `PubmedData` sibling, when there is one)."""
    top = _firsts(citation, CITATION_FIELDS)
    pmid, version = _pmid(top.get("PMID"))
    doc = Document(doc_id=f"pmid:{pmid}", source="pubmed", pmid=pmid, pmid_version=version)
    article = top.get("Article")
    if article is None:  # not seen in real data; keep the record, the filter drops it
        return doc
    _read_article(article, doc)
    doc.revised = _date(top.get("DateRevised"))
    _ids(pubmed_data, doc)
    return doc


def book_document(record: etree._Element) -> Document:
    """A `PubmedBookArticle` (a book or a chapter of one)."""
    book_doc = record.find("BookDocument")
    if book_doc is None:
        raise ValueError("PubmedBookArticle without a BookDocument")
    pmid, version = _pmid(_first(book_doc, "PMID"))
    doc = Document(doc_id=f"pmid:{pmid}", source="pubmed", pmid=pmid, pmid_version=version)
    book = book_doc.find("Book")
    doc.title = text_of(book_doc.find("ArticleTitle")) or text_of(
        None if book is None else book.find("BookTitle")
    )
    doc.text = abstract_text(book_doc.find("Abstract"))
    if book is not None:
        doc.year = _year(book.findtext("PubDate/Year"))
    if doc.year is None:
        doc.year = _year(book_doc.findtext("ContributionDate/Year"))
    doc.language = book_doc.findtext("Language")
    doc.pub_types = [t.text for t in book_doc.iterfind("PublicationType") if t.text]
    for aid in book_doc.iterfind("ArticleIdList/ArticleId"):
        if aid.get("IdType") == "doi" and aid.text:
            doc.doi = aid.text.strip()
    _ids(record.find("PubmedBookData"), doc)
    return doc


def _compiled_document(el: etree._Element) -> Document | None:
    """`citation_document` of a PubmedArticle from the fields the helper read, or None where
    the Python path must read it."""
    assert _fast is not None
    fields = _fast.article_fields(el)
    if fields is None:
        return None
    (pmid_text, version, has_article, title, vernacular, parts, issue_year, medline_date,
     e_year, language, pub_types, doi, revised, pmcid, id_doi) = fields  # fmt: skip
    pmid, version = _pmid_of(pmid_text, version)
    doc = Document(doc_id=f"pmid:{pmid}", source="pubmed", pmid=pmid, pmid_version=version)
    if not has_article:
        return doc
    doc.title = squeeze(title or "") or squeeze(vernacular or "")
    doc.text = "" if parts is None else _abstract_of((lb, squeeze(t)) for lb, t in parts)
    doc.year = _earliest(_year(e_year), _year(issue_year) or _year(medline_date))
    doc.language = language
    doc.pub_types = pub_types
    doc.revised = None if revised is None else _date_of(*revised)
    doc.pmcid = pmcid
    doc.doi = doi if doi is not None else id_doi
    return doc


def _document(el: etree._Element) -> Document:
    """The document of a PubmedArticle, bare MedlineCitation or PubmedBookArticle."""
    if el.tag == "PubmedArticle":
        if _fast is not None and (doc := _compiled_document(el)) is not None:
            return doc
        parts = _firsts(el, RECORD_PARTS)
        citation = parts.get("MedlineCitation")
        if citation is None:
            raise ValueError("PubmedArticle without a MedlineCitation")
        return citation_document(citation, parts.get("PubmedData"))
    if el.tag == "MedlineCitation":
        return citation_document(el, None)
    return book_document(el)


def iter_pubmed(
    path: Path | str, stats: PubmedStats | None = None, limits: XMLLimits = DEFAULT_LIMITS
) -> Iterator[Document]:
    """The documents of one PubMed XML file (.xml or .xml.gz), in file order.

    `stats`, when given, is filled in as the file is read (counts and deleted PMIDs).
    A malformed file raises `XMLParseError` naming the file and the position; one over the
    size caps of `limits` (a decompression bomb) raises `XMLLimitError` while it streams.
    """
    stats = stats if stats is not None else PubmedStats()
    # Only a legacy file's records are bare MedlineCitation elements: listening for that tag
    # in a PubmedArticleSet would add an event per record.
    tags = LEGACY_TAGS if b"<MedlineCitationSet" in head(path) else RECORD_TAGS
    # `iter_elements` releases each record once the next is asked for.
    for i, el in enumerate(iter_elements(path, tags, limits)):
        tag = el.tag
        try:
            doc = _document(el) if tag != "DeleteCitation" else None
        except ValueError as e:  # name the file (a record without a PMID, say)
            raise ValueError(f"{path}: record {i + 1} ({tag}): {e}") from e
        if tag == "PubmedArticle":
            stats.articles += 1
        elif tag == "MedlineCitation":
            stats.citations += 1
        elif tag == "PubmedBookArticle":
            stats.book_articles += 1
        else:  # DeleteCitation
            stats.deleted.extend(p.text.strip() for p in el.iterfind("PMID") if p.text)
            continue
        assert doc is not None
        if not doc.text:
            stats.no_abstract += 1
        yield doc


def parse_pubmed_file(
    path: Path | str, out_dir: Path, rows_per_shard: int, limits: XMLLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Parse one PubMed file into document shards under `out_dir` (all or nothing), within the
    size caps of `limits`.

    Returns {"shards": [(path, n_docs)], "deleted_pmids": [...], "counts": {...}}.
    """
    stats = PubmedStats()
    shards = write_sharded(iter_pubmed(path, stats, limits), out_dir, rows_per_shard)
    return {"shards": shards, "deleted_pmids": stats.deleted, "counts": stats.as_dict()}
