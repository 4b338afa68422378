"""PubMed parser: every real file in shared data against its manifest, plus field-level checks,
on both paths of the parser (with its compiled helper `_pubmed_fast` where the install built it,
and without); the two paths are also compared record by record."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from lxml import etree
from parser_fixtures import use_parser_path

from mediswift.data import pubmed
from mediswift.data.pubmed import PubmedStats, iter_pubmed, parse_pubmed_file
from mediswift.data.shards import iter_documents
from mediswift.data.xml import FEED_SLICE, iter_elements, release


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both paths of the parser."""
    return use_parser_path(request.param, pubmed, monkeypatch)


def _both(el: etree._Element) -> tuple[object, object]:
    """The record's Document from the helper's fields and from the Python path."""
    compiled = pubmed._compiled_document(el)
    saved, pubmed._fast = pubmed._fast, None
    try:
        return compiled, pubmed._document(el)
    finally:
        pubmed._fast = saved


_COMPILED_ONLY = pytest.mark.parametrize("parser_path", ["compiled"], indirect=True)


@_COMPILED_ONLY
def test_both_paths_agree_on_every_real_record(
    parser_path: str, mirror_dir: Path, shared_data: Path
) -> None:
    files = sorted((mirror_dir / "pubmed").rglob("*.xml.gz"))
    files += sorted((shared_data / "pubmed_xml").rglob("*.xml*"))
    seen = 0
    for path in files:
        for el in iter_elements(path, pubmed.RECORD_TAGS):
            if el.tag == "PubmedArticle":
                compiled, python = _both(el)
                assert compiled == python, path
                seen += 1
    assert seen > 1000


_EDGE = """<PubmedArticle><MedlineCitation><PMID Version="{version}"> 42 </PMID>
<DateRevised><Year>2020</Year><Month>Sep</Month><Day>3</Day></DateRevised>
<Article><Journal><ISSN>1</ISSN><JournalIssue><Volume>1</Volume></JournalIssue>
<JournalIssue><PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue>
</Journal><ArticleTitle>A <i>b</i><!-- c -->  d<![CDATA[ e&f ]]></ArticleTitle>
<ELocationID EIdType="pii">x1</ELocationID><ELocationID EIdType="doi"> 10.1/x </ELocationID>
<Abstract><AbstractText Label="UNLABELLED">one</AbstractText><!-- x -->
<AbstractText Label="B">two <sup>2</sup> three</AbstractText><CopyrightInformation>c
</CopyrightInformation><AbstractText Label="C"/></Abstract>
<Language>eng</Language><Language>fre</Language>
<PublicationTypeList><PublicationType>J</PublicationType><PublicationType/></PublicationTypeList>
<PublicationTypeList><PublicationType>R</PublicationType></PublicationTypeList>
<ArticleDate><Month>1</Month></ArticleDate><ArticleDate><Year>1997</Year></ArticleDate>
<VernacularTitle>V</VernacularTitle></Article></MedlineCitation>
<PubmedData><ArticleIdList><ArticleId IdType="pmc"> </ArticleId><ArticleId IdType="pmc">PMC9
</ArticleId><ArticleId IdType="doi">10.2/y</ArticleId></ArticleIdList></PubmedData>
</PubmedArticle>"""
_BASE = _EDGE.format(version="2")


@_COMPILED_ONLY
@pytest.mark.parametrize(
    "record",
    [
        _EDGE.format(version="2"),
        _EDGE.format(version=""),
        _BASE.replace('<ELocationID EIdType="doi"> 10.1/x </ELocationID>', ""),
        _BASE.replace("<ArticleTitle>", "<ArticleTitle><x/>").replace("Abstract>", "Abstrac>"),
        _BASE.replace("<Article>", "<Articl>").replace("</Article>", "</Articl>"),
        _BASE.replace("<DateRevised>", "<!-- --><DateRevised>"),
        _BASE.replace("<PubDate><MedlineDate>", "<PubDate><Year>2001</Year><MedlineDate>"),
    ],
)
def test_both_paths_agree_on_edge_cases(parser_path: str, record: str) -> None:
    el = etree.fromstring(record)
    compiled, python = _both(el)
    assert compiled == python
    assert compiled is not None


@_COMPILED_ONLY
def test_a_dtd_that_declares_attributes_is_read_by_the_python_path(parser_path: str) -> None:
    """lxml's `.get` returns a DTD's attribute defaults; the helper leaves such files to it."""
    dtd = '<!DOCTYPE PubmedArticle [<!ATTLIST ELocationID EIdType CDATA "doi">]>'
    el = etree.fromstring(dtd + _BASE.replace(' EIdType="pii"', ""))
    assert pubmed._fast.article_fields(el) is None
    assert pubmed._document(el).doi == "x1"


def _manifest(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "pubmed_xml" / "manifest.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_every_file_matches_its_manifest_row(shared_data: Path) -> None:
    root = shared_data / "pubmed_xml"
    rows = _manifest(shared_data)
    assert len(rows) == 147
    totals = {"articles": 0, "books": 0, "no_abstract": 0}
    for row in rows:
        stats = PubmedStats()
        docs = list(iter_pubmed(root / row["file"], stats))
        assert len(docs) == stats.records, row["file"]
        got = (stats.articles + stats.citations, stats.book_articles)
        assert got == (int(row["n_PubmedArticle"]), int(row["n_PubmedBookArticle"])), row["file"]
        assert stats.no_abstract == int(row["n_empty_or_missing_AbstractText"]), row["file"]
        assert len(stats.deleted) == int(row["n_DeleteCitation"]), row["file"]
        assert all(d.doc_id == f"pmid:{d.pmid}" and d.pmid.isdigit() for d in docs)
        if row["root"] == "PubmedArticleSet":
            totals["articles"] += stats.articles
            totals["books"] += stats.book_articles
            totals["no_abstract"] += stats.no_abstract
    assert totals == {"articles": 1292, "books": 10, "no_abstract": 123}


def test_legacy_medlinecitationset(shared_data: Path) -> None:
    stats = PubmedStats()
    path = shared_data / "pubmed_xml/legacy_medlinecitationset/medline16n0902.xml.gz"
    docs = list(iter_pubmed(path, stats))
    assert (stats.citations, stats.articles, stats.no_abstract) == (604, 0, 78)
    assert len(stats.deleted) == 1 and stats.deleted[0].isdigit()
    assert len({d.pmid for d in docs}) == 604
    with_abstract = [d for d in docs if d.text]
    assert all(d.title for d in docs)
    assert sum(d.year is not None for d in docs) == 604
    assert len(with_abstract) == 526


def test_fields_of_real_records(shared_data: Path) -> None:
    root = shared_data / "pubmed_xml" / "efetch"
    docs = {d.pmid: d for f in sorted(root.iterdir()) for d in iter_pubmed(f) if d.pmid is not None}
    assert len(docs) == 1178  # 1180 records, 2 PMIDs occur twice (see SOURCE.md)
    structured = [d for d in docs.values() if "\n" in d.text]
    assert len(structured) > 300
    # Labelled parts become 'LABEL: text', one a line, in order.
    assert all(":" in line for d in structured[:50] for line in d.text.split("\n"))
    # Inline markup keeps its text; no markup leaks into the text.
    assert not any("<i>" in d.text or "<sup>" in d.text for d in docs.values())
    years = [d.year for d in docs.values()]
    assert None not in years and min(years) >= 1953 and max(years) <= 2025
    assert {d.language for d in docs.values()} >= {"eng", "ger"}
    assert sum(bool(d.pub_types) for d in docs.values()) == len(docs)
    assert any(d.pmid_version == 3 for d in docs.values())
    assert sum(d.pmcid is not None for d in docs.values()) > 100
    assert all(d.pmcid.startswith("PMC") for d in docs.values() if d.pmcid)
    # DateRevised, as an ISO date that orders as text (the snapshot cut-off compares it).
    revised = [d.revised for d in docs.values() if d.revised is not None]
    assert len(revised) > 1000  # efetch leaves it out of some records: those are kept
    assert all(len(r) == 10 and r[4] == r[7] == "-" for r in revised)
    assert min(revised) >= "1990" and max(revised) <= "2026-12-31"


ARTICLE = """<?xml version="1.0"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">
<PubmedArticleSet>
<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="2">111</PMID>
<Article PubModel="Print"><Journal><JournalIssue><PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue></Journal>
<ArticleTitle>[Not in English]</ArticleTitle>
<Abstract><AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Cells with <i>TP53</i> loss
 and CO<sub>2</sub>.</AbstractText><AbstractText Label="RESULTS">It works.</AbstractText>
<AbstractText>Unlabelled tail.</AbstractText></Abstract>
<Language>ger</Language><PublicationTypeList><PublicationType UI="D016428">Journal Article</PublicationType>
<PublicationType UI="D016454">Review</PublicationType></PublicationTypeList></Article>
</MedlineCitation><PubmedData><ArticleIdList><ArticleId IdType="pubmed">111</ArticleId>
<ArticleId IdType="doi">10.1/x</ArticleId><ArticleId IdType="pmc">PMC9</ArticleId></ArticleIdList></PubmedData></PubmedArticle>
<PubmedBookArticle><BookDocument><PMID Version="1">222</PMID><Book><BookTitle book="b">A Book</BookTitle>
<PubDate><Year>2021</Year></PubDate></Book><Language>eng</Language><PublicationType>Review</PublicationType>
<Abstract><AbstractText>Book abstract.</AbstractText></Abstract></BookDocument><PubmedBookData/></PubmedBookArticle>
<PubmedArticle><MedlineCitation><PMID Version="1">333</PMID><Article><Journal><JournalIssue><PubDate><Season>Spring</Season></PubDate></JournalIssue></Journal>
<ArticleTitle></ArticleTitle><ArticleDate DateType="Electronic"><Year>2020</Year></ArticleDate></Article>
<VernacularTitle>Titre</VernacularTitle></MedlineCitation></PubmedArticle>
<DeleteCitation><PMID Version="1">444</PMID><PMID Version="1">555</PMID></DeleteCitation>
</PubmedArticleSet>
"""


@pytest.fixture
def article_gz(tmp_path: Path) -> Path:
    path = tmp_path / "pubmed26n9999.xml.gz"
    path.write_bytes(gzip.compress(ARTICLE.encode()))
    return path


def test_article_fields(article_gz: Path) -> None:
    stats = PubmedStats()
    a, b, c = list(iter_pubmed(article_gz, stats))
    assert (a.doc_id, a.pmid, a.pmid_version, a.year) == ("pmid:111", "111", 2, 1998)
    assert (
        a.text == "BACKGROUND: Cells with TP53 loss and CO2.\nRESULTS: It works.\nUnlabelled tail."
    )
    assert (a.language, a.pub_types, a.doi, a.pmcid) == (
        "ger",
        ["Journal Article", "Review"],
        "10.1/x",
        "PMC9",
    )
    assert (b.doc_id, b.title, b.text, b.year, b.pub_types) == (
        "pmid:222", "A Book", "Book abstract.", 2021, ["Review"],
    )  # fmt: skip
    assert (c.title, c.text, c.year) == ("", "", 2020)
    assert stats.deleted == ["444", "555"]
    assert (stats.articles, stats.book_articles, stats.no_abstract) == (2, 1, 1)


def test_vernacular_title_fallback(tmp_path: Path) -> None:
    xml = ARTICLE.replace(
        "<ArticleTitle></ArticleTitle>", "<VernacularTitle>Titre</VernacularTitle>"
    )
    path = tmp_path / "v.xml"
    path.write_text(xml)
    assert list(iter_pubmed(path))[2].title == "Titre"


def test_parse_file_writes_shards_and_deletions(article_gz: Path, tmp_path: Path) -> None:
    out = tmp_path / "unit"
    result = parse_pubmed_file(article_gz, out, rows_per_shard=2)
    assert [n for _, n in result["shards"]] == [2, 1]
    assert result["deleted_pmids"] == ["444", "555"]
    docs = [d for p, _ in result["shards"] for d in iter_documents(p)]
    assert [d.pmid for d in docs] == ["111", "222", "333"]


def test_tree_stays_flat_while_streaming(mirror_dir: Path) -> None:
    """Released records are deleted from the root: it never holds more than one at a time."""
    path = mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz"
    n = 0
    for el in iter_elements(path, ("PubmedArticle", "PubmedBookArticle")):
        prev = el.getprevious()  # the last released record (cleared); all before it are gone
        assert prev is None or (len(prev) == 0 and prev.getprevious() is None)
        # Only the parser's read-ahead follows it: the records completed in the slice it was
        # handed last, and the one it is in the middle of.
        ahead = list(el.itersiblings())[:-1]
        assert sum(len(etree.tostring(s)) for s in ahead) <= FEED_SLICE
        release(el)
        n += 1
    assert n == 325


def test_unlabelled_placeholder_and_earliest_year(tmp_path) -> None:
    import gzip

    from mediswift.data.pubmed import iter_pubmed

    xml = b"""<?xml version="1.0"?>
<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">42</PMID><Article>
<Journal><JournalIssue><PubDate><Year>2023</Year></PubDate></JournalIssue></Journal>
<ArticleTitle>T</ArticleTitle><Abstract>
<AbstractText Label="UNLABELLED" NlmCategory="UNASSIGNED">Plain part.</AbstractText>
<AbstractText Label="RESULTS">Found.</AbstractText></Abstract>
<ArticleDate DateType="Electronic"><Year>2022</Year></ArticleDate>
</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"""
    path = tmp_path / "x.xml.gz"
    path.write_bytes(gzip.compress(xml))
    (doc,) = list(iter_pubmed(path))
    assert doc.text == "Plain part.\nRESULTS: Found."
    assert doc.year == 2022  # the electronic date is earlier than the issue's
