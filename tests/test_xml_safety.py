"""Untrusted XML: no entity expansion, no DTD or network access, clear errors with positions."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mediswift.data.pmc import iter_pmc
from mediswift.data.pubmed import iter_pubmed
from mediswift.data.xml import (
    SAFE_PARSER_OPTIONS,
    UnsafeXMLError,
    XMLParseError,
    iter_elements,
)

SECRET = "top-secret-token-4711"

PUBMED_BODY = (
    '<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">1</PMID><Article>'
    "<ArticleTitle>T {ref}</ArticleTitle><Abstract><AbstractText>A {ref} b</AbstractText>"
    "</Abstract></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"
)
JATS_BODY = (
    '<article><front><article-meta><article-id pub-id-type="pmc">1</article-id><title-group>'
    "<article-title>T {ref}</article-title></title-group><abstract><p>A {ref}</p></abstract>"
    "</article-meta></front><body><sec><title>S</title><p>B {ref}</p></sec></body></article>"
)
PARSERS = {"pubmed": (PUBMED_BODY, "PubmedArticleSet", iter_pubmed),
           "jats": (JATS_BODY, "article", iter_pmc)}  # fmt: skip


def _write(path: Path, root: str, body: str, entities: str, ref: str) -> Path:
    xml = f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n{entities}\n]>\n' + body.format(ref=ref)
    if path.suffix == ".gz":  # gzip files take the streaming path, plain ones the whole-file one
        path.write_bytes(gzip.compress(xml.encode()))
    else:
        path.write_text(xml)
    return path


def test_settings() -> None:
    assert SAFE_PARSER_OPTIONS == {
        "resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False,
    }  # fmt: skip


@pytest.mark.parametrize("suffix", [".xml", ".xml.gz"])
@pytest.mark.parametrize("kind", PARSERS)
def test_xxe_file_is_refused_and_nothing_leaks(kind: str, suffix: str, tmp_path: Path) -> None:
    body, root, parse = PARSERS[kind]
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    path = _write(
        tmp_path / f"xxe{suffix}", root, body, f'<!ENTITY xxe SYSTEM "file://{secret}">', "&xxe;"
    )
    with pytest.raises(UnsafeXMLError, match=r"xxe\.xml.*'xxe'") as err:
        list(parse(path))
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("suffix", [".xml", ".xml.gz"])
@pytest.mark.parametrize("kind", PARSERS)
def test_billion_laughs_is_an_error_not_a_blow_up(kind: str, suffix: str, tmp_path: Path) -> None:
    body, root, parse = PARSERS[kind]
    lines = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    ]
    path = _write(tmp_path / f"lol{suffix}", root, body, "\n".join(lines), "&lol9;")
    with pytest.raises(XMLParseError, match="lol.xml"):
        list(parse(path))


@pytest.mark.parametrize("kind", PARSERS)
def test_external_dtd_is_not_fetched(kind: str, tmp_path: Path) -> None:
    """A DOCTYPE naming an unreachable DTD parses offline, as real files do."""
    body, root, parse = PARSERS[kind]
    path = tmp_path / "ext.xml"
    path.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE {root} PUBLIC "-//X//Y//EN" "http://127.0.0.1:9/x.dtd">\n'
        + body.format(ref="")
    )
    (doc,) = parse(path)
    assert doc.title == "T"


def test_character_references_are_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "u.xml"
    path.write_text(PUBMED_BODY.format(ref="&#x3b1;"))
    (doc,) = iter_pubmed(path)
    assert doc.text == "A α b"


def test_truncated_gzip_names_file_and_position(mirror_dir: Path, tmp_path: Path) -> None:
    data = (mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz").read_bytes()
    path = tmp_path / "pubmed26n0001.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        XMLParseError, match=r"pubmed26n0001\.xml\.gz: truncated .* compressed bytes"
    ):
        list(iter_pubmed(path))


def test_records_before_a_syntax_error_still_come_first(tmp_path: Path) -> None:
    """A streamed file gives every record that parsed before the error, then the error."""
    path = tmp_path / "bad.xml.gz"
    path.write_bytes(gzip.compress(b"<s><r/><r>x</r><</s>"))
    got = []
    with pytest.raises(XMLParseError, match=r"bad\.xml\.gz: malformed XML at line 1"):
        for element in iter_elements(path, ("r",)):
            got.append(element.tag)
    assert got == ["r", "r"]


def test_malformed_xml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml.gz"
    xml = PUBMED_BODY.format(ref="").replace("</Abstract>", "</Abstract\n>\n<oops></Article>")
    path.write_bytes(gzip.compress(xml.encode()))
    with pytest.raises(XMLParseError, match=r"bad\.xml\.gz: malformed XML at line 3, column"):
        list(iter_pubmed(path))
