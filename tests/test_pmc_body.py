"""PMC parsing against a reference: every real article, and hand-written edge cases.

The reference is the parser as it was before the reference lists were cut from the bytes before
parsing, the counts moved out of the stylesheet and the text split with numpy: the whole file
parsed, the stylesheet with its XPath counts, the text split and squeezed block by block, the
metadata read with ElementPath. Documents and counts must be identical, on both paths of the
parser: with its compiled helper (`_pmc_fast`, where the install built it) and without. The
helper's functions are also fuzzed against their Python counterparts.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from lxml import etree
from parser_fixtures import use_parser_path

from mediswift.data import pmc
from mediswift.data.pmc import PmcHints, PmcStats, iter_pmc
from mediswift.data.shards import Document
from mediswift.data.xml import XMLParseError, iter_elements


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both paths of the parser."""
    return use_parser_path(request.param, pmc, monkeypatch)


# ----------------------------------------------------------------------------- the reference

_LEFT_OUT = "|".join(t if t != pmc.MATHML else "mml:math" for t in pmc.STRIP_TAGS)
_REFERENCE_XSL = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
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
_local = threading.local()


def _reference_xslt() -> etree.XSLT:
    if not hasattr(_local, "xslt"):
        _local.xslt = etree.XSLT(etree.XML(_REFERENCE_XSL.encode()))
    return _local.xslt


def _squeeze(text: str) -> str:
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()


def _reference_body(article: etree._Element, stats: PmcStats) -> list[str]:
    text = str(_reference_xslt()(article))
    counts, _, text = text.partition(pmc.SEP)
    sections, paragraphs, figures, tables = (int(n) for n in counts.split())
    stats.sections += sections
    stats.paragraphs += paragraphs
    stats.figures += figures
    stats.tables += tables
    return [_squeeze(b) for b in text.split(pmc.SEP) if b and not b.isspace()]


def _reference_abstract(meta: etree._Element) -> str:
    lines = []
    for abstract in meta.iterfind("abstract"):
        kind = abstract.get("abstract-type")
        if kind in pmc.SKIP_ABSTRACT_TYPES:
            continue
        for child in abstract:
            if child.tag == "title" and kind in pmc.HEADED_ABSTRACT_TYPES:
                lines.append(pmc.text_of(child))
            elif child.tag == "sec":
                title = pmc.text_of(child.find("title"))
                body = " ".join(pmc.text_of(p) for p in child.iter("p"))
                lines.append(f"{title}: {body}" if title and body else title or body)
            elif child.tag == "p":
                lines.append(pmc.text_of(child))
    return "\n".join(line for line in lines if line)


def _reference_license(meta: etree._Element) -> str | None:
    lic = meta.find(".//license")
    if lic is None:
        return None
    url = (
        lic.findtext(f"{pmc.ALI}license_ref")
        or lic.findtext("license_ref")
        or lic.get(f"{pmc.XLINK}href")
        or ""
    ).strip()
    return url or lic.get("license-type") or None


def _reference_dates(meta: etree._Element) -> tuple[int | None, str | None]:
    years = [
        int(y.text) for y in meta.iterfind("pub-date/year") if y.text and y.text.strip().isdigit()
    ]

    def number(el: etree._Element, tag: str) -> int:
        text = (el.findtext(tag) or "").strip()
        return int(text) if text.isdigit() else 1

    dates = []
    for d in meta.iterfind("pub-date"):
        year = (d.findtext("year") or "").strip()
        if year.isdigit() and len(year) == 4:
            month, day = number(d, "month"), number(d, "day")
            if 1 <= month <= 12 and 1 <= day <= 31:
                dates.append(f"{year}-{month:02d}-{day:02d}")
    return (min(years) if years else None), (min(dates) if dates else None)


def _reference_document(article: etree._Element, hints: PmcHints, stats: PmcStats) -> Document:
    meta = article.find("front/article-meta")
    if meta is None:
        raise ValueError("article without front/article-meta")
    ids: dict[str, str] = {}
    for aid in meta.iterfind("article-id"):
        kind, value = aid.get("pub-id-type"), (aid.text or "").strip()
        if kind and value:
            ids.setdefault(kind, value)
    pmcid = pmc.normalise_pmcid(ids.get("pmc") or ids.get("pmcid")) or pmc.normalise_pmcid(
        hints.pmcid
    )
    if pmcid is None:
        raise ValueError("article without a PMCID (none in the XML, none in the metadata)")
    license = _reference_license(meta)
    lines = _reference_body(article, stats)
    etree.strip_elements(meta, *pmc.STRIP_TAGS, with_tail=False)
    abstract = _reference_abstract(meta)
    stats.articles += 1
    lang = article.get(pmc.XML_LANG)
    year, published = _reference_dates(meta)
    return Document(
        doc_id=f"pmc:{pmcid}",
        source="pmc",
        pmcid=pmcid,
        pmid=ids.get("pmid") or hints.pmid,
        doi=ids.get("doi"),
        title=pmc.text_of(meta.find("title-group/article-title")),
        text="\n\n".join(t for t in (abstract, "\n".join(lines)) if t),
        year=year,
        published=published,
        language=pmc.LANGUAGES.get(lang.lower(), lang) if lang else None,
        pub_types=[article.get("article-type")] if article.get("article-type") else [],
        license=license or hints.license,
    )


def _reference(path: Path, hints: PmcHints) -> tuple[list[dict], dict]:
    """The reference parse: the whole file (nothing cut), as before."""
    stats = PmcStats()
    docs = [
        asdict(_reference_document(a, hints if i == 0 else PmcHints(), stats))
        for i, a in enumerate(iter_elements(path, ("article",)))
    ]
    return docs, asdict(stats)


def _ours(path: Path, hints: PmcHints) -> tuple[list[dict], dict]:
    stats = PmcStats()
    docs = [asdict(d) for d in iter_pmc(path, hints, stats)]
    return docs, asdict(stats)


def _assert_same(path: Path, hints: PmcHints = PmcHints()) -> None:
    assert _ours(path, hints) == _reference(path, hints), path


# ----------------------------------------------------------------------------- real files


def _real_files(mirror_dir: Path, shared_data: Path) -> list[Path]:
    cloud = sorted((mirror_dir / "pmc").glob("*/*.xml"))
    # What benchmarks/parse.py reads as the .nxml set, and the efetch articleset beside it.
    other = sorted(
        p for p in (shared_data / "pmc_nxml").rglob("*") if p.suffix in (".nxml", ".xml")
    )
    return cloud + other


def test_every_real_article_matches_the_reference(mirror_dir: Path, shared_data: Path) -> None:
    files = _real_files(mirror_dir, shared_data)
    assert len(files) > 150
    for path in files:
        _assert_same(path, PmcHints(pmcid=path.name.split(".")[0]))


def test_real_files_are_cut(mirror_dir: Path) -> None:
    """The fast path is the one taken: most real files have their reference lists cut."""
    files = sorted((mirror_dir / "pmc").glob("*/*.xml"))
    cut = 0
    for path in files:
        data = path.read_bytes()
        trimmed = pmc.trim_reference_lists(data)
        if trimmed is not None:
            assert len(trimmed[0]) < 0.9 * len(data)
            assert trimmed[1](etree.fromstring(trimmed[0])), path
            cut += 1
    assert cut >= 0.9 * len(files)


# ----------------------------------------------------------------------------- edge cases

META = (
    '<front><article-meta><article-id pub-id-type="pmc">{n}</article-id>'
    '<article-id pub-id-type="pmid">9{n}</article-id>'
    "<title-group><article-title>Title <inline-formula>x</inline-formula>{n}</article-title>"
    "</title-group><pub-date><year>2001</year><month>3</month></pub-date>"
    '<permissions><license license-type="open-access"><license_ref>https://l/{n}</license_ref>'
    "</license></permissions>"
    "<abstract><sec><title>Aim</title><p>Find <italic>it</italic>.</p></sec></abstract>"
    '<abstract abstract-type="summary"><title>Author Summary</title><p>Plain.</p></abstract>'
    "</article-meta></front>"
)
REFS = (
    '<ref-list><title>References</title><ref id="r1"><mixed-citation>A. B. <article-title>'
    "Not in the text</article-title> <year>2000</year>; <fpage>1</fpage>.</mixed-citation>"
    "</ref></ref-list>"
)
BODIES = {
    "nested blocks": "<body><sec><title>S</title><list><list-item><p>one</p><p>two</p>"
    "</list-item><list-item><p>three <disp-quote><p>quoted</p></disp-quote> after</p>"
    "</list-item></list><boxed-text><p>boxed</p></boxed-text></sec></body>",
    "p in caption": '<body><p>x</p><fig id="f"><label>Figure 1</label><caption><p>Cap one.</p>'
    "<p>Cap two.</p></caption><graphic/></fig><p>y</p></body>",
    "sec label and title": "<body><sec><label>1.</label><title>Intro</title><p>a</p>"
    "<sec><label>1.1</label><title>Sub</title><p>b</p></sec></sec>"
    "<sec><title>No label</title><p>c</p></sec><sec><label>2</label><p>d</p></sec></body>",
    "fig label or caption only": "<body><fig><label>Fig 2</label></fig><fig><caption><title>"
    "Only caption</title></caption></fig><fig><graphic/></fig><fig>text<p>inside</p></fig>"
    "</body>",
    "table-wrap": '<body><table-wrap id="t"><label>Table 1</label><caption><title>T</title>'
    "<p>cap</p></caption><table><tr><td><p>cell</p></td></tr></table><table-wrap-foot>"
    "<fn><p>foot</p></fn></table-wrap-foot></table-wrap></body>",
    "floats group": "<body><p>x</p></body><floats-group><fig><label>F1</label><caption><p>c1"
    "</p></caption></fig><table-wrap><label>T1</label><caption><p>t1</p></caption><table>"
    "<tr><td>1</td></tr></table></table-wrap></floats-group>",
    "figs in back": "<body><p>x</p></body><back><app-group><app><fig><label>A1</label>"
    "<caption><p>app fig</p></caption></fig></app></app-group>" + REFS + "</back>",
    "formula with tail": "<body><p>a <inline-formula><mml:math><mml:mi>x</mml:mi></mml:math>"
    "</inline-formula> b</p><disp-formula><tex-math>\\alpha</tex-math></disp-formula>"
    "<p>c<alternatives><graphic/><tex-math>y</tex-math></alternatives>d</p></body>",
    "comments and PIs": "<body><p>a<!-- hidden -->b<?pi hidden?>c</p><!-- between -->"
    "<p>d</p></body>",
    "nested ref-list": "<body><p>x</p></body><back><ref-list><title>R</title><ref-list>"
    '<ref id="a"><mixed-citation>in</mixed-citation></ref></ref-list></ref-list></back>',
    "ref-list with comment": "<body><p>x</p></body><back><ref-list><ref><!-- note </ref-list>"
    " --><mixed-citation>c</mixed-citation></ref></ref-list></back>",
    "ref-list with CDATA": "<body><p>x</p></body><back><ref-list><ref><mixed-citation>"
    "<![CDATA[ </ref-list> ]]></mixed-citation></ref></ref-list></back>",
    "ref-list with PI": "<body><p>x</p></body><back><ref-list><ref><?x </ref-list>?></ref>"
    "</ref-list></back>",
    "ref-list in body sec": "<body><sec><title>S</title><p>x</p><ref-list><p>listed</p>"
    "<ref><mixed-citation>c</mixed-citation></ref></ref-list></sec></body>"
    + "<back>"
    + REFS
    + "</back>",
    "several bodies": "<body><sec><title>One</title><p>a</p></sec></body><body><sec><title>"
    "Two</title><p>b</p></sec></body>",
    "fig in a ref-list in back": "<body><p>x</p></body><back><ref-list><ref><mixed-citation>"
    "c</mixed-citation></ref><fig><label>F9</label><caption><p>in refs</p></caption></fig>"
    "</ref-list></back>",
    "fig in caption in back": "<body><p>x</p></body><back><fig><label>Outer</label><caption>"
    "<p>o <fig><label>Inner</label><caption><p>i</p></caption></fig></p><fig><label>Direct"
    "</label><caption><p>d</p></caption></fig></caption></fig>" + REFS + "</back>",
    "captions outside floats": "<body><boxed-text><caption><title>Box</title>text <graphic/>"
    "<xref>1</xref><inline-formula>f</inline-formula></caption><p>in box</p></boxed-text>"
    "<table-wrap><caption><table-wrap><label>T</label><caption><p>t</p></caption></table-wrap>"
    "<fig><label>F</label></fig></caption></table-wrap></body>",
    "two ref-lists": "<body><p>x</p></body><back><ack><p>thanks</p></ack>"
    + REFS
    + "<fn-group><fn><p>n</p></fn></fn-group>"
    + REFS
    + "</back>",
    "ref-list in a default namespace": "<body><p>x</p></body><back><sec xmlns='urn:x'>"
    + REFS
    + "</sec></back>",
    "body ref-list in a default namespace": "<body><sec xmlns='urn:x'><ref-list><p>shown</p>"
    "</ref-list></sec></body><back>" + REFS + "</back>",
    "back closed in a comment": "<body><p>x</p></body><back>"
    + REFS
    + "<!-- </back> -->"
    + REFS
    + "</back>",
    "whitespace": "<body><p>  two  spaces </p><p>a\u00a0b</p><p>\n a\u00a0b</p>"
    "<p>tab\there</p><p>cr&#13;here</p><p>\u2009</p><p>\u3000x\u3000</p><p>\u00e9 \u00e9</p>"
    "<p>z\u2009z</p></body>",  # a single odd space after the last run: kept as it is
}


def _article(body: str, n: int) -> str:
    return (
        '<article xmlns:mml="http://www.w3.org/1998/Math/MathML" article-type="research-article"'
        f' xml:lang="en">{META.format(n=n)}{body}</article>'
    )


@pytest.mark.parametrize("name", BODIES)
def test_edge_case_matches_the_reference(name: str, tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE article PUBLIC "-//NLM//DTD JATS//EN" "x.dtd">\n'
        + _article(BODIES[name], 1)
    )
    _assert_same(path)


def test_articleset_matches_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "set.xml"
    articles = "".join(_article(b, i) for i, b in enumerate(BODIES.values()))
    path.write_text(f"<pmc-articleset>{articles}</pmc-articleset>")
    _assert_same(path)


def test_cut_and_kept_cases() -> None:
    """Which shapes are cut before parsing (the rest is parsed whole, as the reference)."""

    def cut(name: str) -> bool:
        data = _article(BODIES[name], 1).encode()
        trimmed = pmc.trim_reference_lists(data)
        if trimmed is None:
            return False
        try:
            root = etree.fromstring(trimmed[0])
        except etree.XMLSyntaxError:
            return False
        return trimmed[1](root)

    assert cut("figs in back") and cut("ref-list with comment") and cut("two ref-lists")
    assert cut("nested ref-list")
    assert cut("ref-list in body sec")  # the back's list only: the search starts at `<back`
    for kept in (
        "ref-list with CDATA",
        "ref-list with PI",
        "fig in a ref-list in back",
        "ref-list in a default namespace",
        "back closed in a comment",
    ):
        assert not cut(kept), kept


def test_damaged_file_reports_its_own_position(mirror_dir: Path, tmp_path: Path) -> None:
    """A file that fails after the cut reports the position in the file as it is."""
    source = next(iter(sorted((mirror_dir / "pmc").glob("*/*.xml"))))
    data = source.read_bytes()
    end = data.rindex(b"</ref-list>") + len(b"</ref-list>")
    damaged = tmp_path / "damaged.xml"
    damaged.write_bytes(data[:end] + b"<oops>" + data[end:])
    assert pmc.trim_reference_lists(damaged.read_bytes()) is not None
    with pytest.raises(XMLParseError) as ours:
        list(iter_pmc(damaged, PmcHints("PMC1")))
    with pytest.raises(XMLParseError) as whole:
        list(iter_elements(damaged, ("article",)))
    assert str(ours.value) == str(whole.value)
    truncated = tmp_path / "truncated.xml"
    truncated.write_bytes(data[: end - 3])
    with pytest.raises(XMLParseError, match="line"):
        list(iter_pmc(truncated, PmcHints("PMC1")))


def test_ref_list_span_edges() -> None:
    assert pmc._ref_list_span(b"<a><ref-list") is None  # the file ends in the name
    assert pmc._ref_list_span(b"<a><ref-lists>x</ref-list></a>") is None  # another name
    assert pmc._ref_list_span(b'<a><ref-list x="1">y</ref-list ></a>') == (3, 32)
    assert pmc._ref_list_span(b"<a></ref-list><ref-list/></a>") is None  # end before start


# ----------------------------------------------------------------------------- the helper itself

# The helper's own tests run on the compiled path only (they compare it with the Python one).
_HELPER_ONLY = pytest.mark.parametrize("parser_path", ["compiled"], indirect=True)

_PIECES = [b"<ref>", b"</ref>", b"<!-- c -->", b"<!-- <fig> -->", b"<!--", b"-->", b"<fig>",
           b"</fig>", b"<fig-group>", b"<table-wrap>", b"</table-wrap>", b"<table>", b"<title>",
           b"</back>", b"</ba", b"<back>", b"<?pi?>", b"<![CDATA[x]]>", b"<!DOCTYPE", b"<ta",
           b"<fi", b"</", b"<", b"text", b" ", b"\n", b"fig", b"<!", b"<?"]  # fmt: skip
_TEXT = ["a", " ", "  ", "\n", "\t", "\r", "\xa0", "\u2009", "\u3000", "\x85", "é", "ß",
         "word", " x ", pmc.SEP, pmc.SEP + pmc.SEP, ""]  # fmt: skip


@_HELPER_ONLY
def test_the_helper_matches_the_python_functions(parser_path: str) -> None:
    fast = pmc._fast
    rng = random.Random(7)
    for _ in range(3000):
        data = b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(12)))
        start = rng.randrange(len(data) + 1)
        end = rng.randrange(start, len(data) + 1)
        assert fast.cuttable(data, start, end) == pmc._cuttable(data, start, end), (data, start)
        text = "".join(rng.choice(_TEXT) for _ in range(rng.randrange(16))).encode()
        assert fast.lines(text) == pmc._lines(text), text


@_HELPER_ONLY
def test_the_helper_walks_real_articles_as_the_stylesheet(
    parser_path: str, mirror_dir: Path, shared_data: Path
) -> None:
    """Body text, counts and the cut check on every real file, cut and whole."""
    for path in _real_files(mirror_dir, shared_data):
        data = path.read_bytes()
        span = pmc._ref_list_span(data)
        if span is not None:
            assert pmc._fast.cuttable(data, *span) == pmc._cuttable(data, *span), path
        trimmed = pmc.trim_reference_lists(data)
        for root in [etree.fromstring(data)] + ([etree.fromstring(trimmed[0])] if trimmed else []):
            for article in [root] if root.tag == "article" else root.iterchildren("article"):
                stats = PmcStats()
                pmc._count(article, stats)
                counts = (stats.sections, stats.paragraphs, stats.figures, stats.tables)
                assert pmc._fast.count(article) == counts, path
                assert pmc._fast.body_text(article) == bytes(pmc._body_xslt()(article)), path


@pytest.mark.subprocess
@_HELPER_ONLY
def test_a_helper_built_for_another_lxml_is_not_used(parser_path: str) -> None:
    """It reads lxml's element struct: with another lxml the Python path runs, and says why."""
    code = (
        "import lxml.etree as e; e.__version__ = '0.0'; "
        "from mediswift.data import pmc; print(pmc._fast is None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"
    assert "built for lxml" in done.stderr and "not 0.0" in done.stderr
