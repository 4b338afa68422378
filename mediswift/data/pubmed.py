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

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from mediswift.data.shards import Document, write_sharded
from mediswift.data.xml import DEFAULT_LIMITS, XMLLimits, head, iter_elements, release, text_of

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


def _date(el: etree._Element | None) -> str | None:
    """A PubMed date element (Year, Month, Day) as YYYY-MM-DD, or None when it has no year."""
    if el is None:
        return None
    year = _year(el.findtext("Year"))
    if year is None:
        return None
    month, day = (el.findtext(t) or "1" for t in ("Month", "Day"))
    try:
        return f"{year:04d}-{int(month):02d}-{int(day):02d}"
    except ValueError:  # a named month ('Sep'): the date is still ordered by its year
        return f"{year:04d}-01-01"


def abstract_text(abstract: etree._Element | None) -> str:
    """Every AbstractText in order; labelled parts as 'LABEL: text'; parts joined by newlines."""
    if abstract is None:
        return ""
    parts = []
    for part in abstract.iterfind("AbstractText"):
        text = text_of(part)
        label = part.get("Label")
        if label and label.strip().upper() == "UNLABELLED":
            label = None  # PubMed's placeholder for a part without a heading, not a heading
        if label and text:
            text = f"{label}: {text}"
        elif label:
            text = label
        if text:
            parts.append(text)
    return "\n".join(parts)


def _pmid(parent: etree._Element) -> tuple[str, int]:
    el = parent.find("PMID")
    if el is None or not (el.text or "").strip():
        raise ValueError("record without a PMID")
    return el.text.strip(), int(el.get("Version") or 1)


def _ids(pubmed_data: etree._Element | None, doc: Document) -> None:
    if pubmed_data is None:
        return
    for aid in pubmed_data.iterfind("ArticleIdList/ArticleId"):
        kind = aid.get("IdType")
        if kind == "pmc" and doc.pmcid is None and aid.text:
            doc.pmcid = aid.text.strip()
        elif kind == "doi" and doc.doi is None and aid.text:
            doc.doi = aid.text.strip()


def citation_document(citation: etree._Element, pubmed_data: etree._Element | None) -> Document:
    """A `MedlineCitation` (with its `PubmedData` sibling, when there is one)."""
    pmid, version = _pmid(citation)
    article = citation.find("Article")
    doc = Document(doc_id=f"pmid:{pmid}", source="pubmed", pmid=pmid, pmid_version=version)
    if article is None:  # not seen in real data; keep the record, the filter drops it
        return doc
    doc.title = text_of(article.find("ArticleTitle")) or text_of(article.find("VernacularTitle"))
    doc.text = abstract_text(article.find("Abstract"))
    # The earliest year the record gives (issue date or electronic publication), the rule the
    # PMC parser uses for its `pub-date`s too.
    issue = article.find("Journal/JournalIssue/PubDate")
    years = [_year(article.findtext("ArticleDate/Year"))]
    if issue is not None:
        years.append(_year(issue.findtext("Year")) or _year(issue.findtext("MedlineDate")))
    doc.year = min((y for y in years if y is not None), default=None)
    doc.language = article.findtext("Language")
    doc.revised = _date(citation.find("DateRevised"))
    doc.pub_types = [
        t.text for t in article.iterfind("PublicationTypeList/PublicationType") if t.text
    ]
    for loc in article.iterfind("ELocationID"):
        if loc.get("EIdType") == "doi" and loc.text:
            doc.doi = loc.text.strip()
            break
    _ids(pubmed_data, doc)
    return doc


def book_document(record: etree._Element) -> Document:
    """A `PubmedBookArticle` (a book or a chapter of one)."""
    book_doc = record.find("BookDocument")
    if book_doc is None:
        raise ValueError("PubmedBookArticle without a BookDocument")
    pmid, version = _pmid(book_doc)
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


def _document(el: etree._Element) -> Document:
    """The document of a PubmedArticle, bare MedlineCitation or PubmedBookArticle."""
    if el.tag == "PubmedArticle":
        citation = el.find("MedlineCitation")
        if citation is None:
            raise ValueError("PubmedArticle without a MedlineCitation")
        return citation_document(citation, el.find("PubmedData"))
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
            release(el)
            continue
        release(el)
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
