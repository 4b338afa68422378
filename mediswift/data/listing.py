"""Listing what an upstream folder holds: an HTML index, an S3 bucket, or a local directory.

- NCBI serves `pubmed/baseline/` and `pubmed/updatefiles/` as an Apache-style HTML index: one
  `<a href="pubmed26n0001.xml.gz">` per file. `list_index` keeps hrefs that name an entry of
  this very folder (no `/`, no query, no fragment), so a hostile page cannot point us elsewhere.
- The PMC Cloud Service is an S3 bucket: `list_prefixes` pages through ListObjectsV2
  (`?list-type=2&delimiter=/`, `continuation-token`) and yields the common prefixes, i.e. the
  per-article folders, in the bucket's lexicographic order.
- A local directory (the mirror as a folder) answers both with a sorted directory listing, so
  the order is the same either way. A mirror served by a plain static file server (answering
  the bucket URL with an HTML index) is read through its index the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlencode

from lxml import etree

from mediswift.data.http import HttpClient, NotFoundError, PermanentError, is_url

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def index_names(html: str, folders: bool = False) -> list[str]:
    """Entries linked from a directory index page, in page order, without duplicates: files,
    or with `folders=True` the sub-folders (hrefs `name/`, returned without the slash)."""
    parser = _Hrefs()
    parser.feed(html)
    names: list[str] = []
    for href in parser.hrefs:
        name = unquote(href.removeprefix("./"))
        if folders != name.endswith("/"):
            continue
        name = name.removesuffix("/")
        if not name or any(c in name for c in "/\\?#") or name in (".", ".."):
            continue  # a parent/sort/absolute link, or not an entry of this folder
        if name not in names:
            names.append(name)
    return names


def list_index(client: HttpClient, base: str) -> list[str]:
    """Names of the entries of folder `base` (a URL serving an HTML index, or a directory)."""
    if is_url(base):
        url = base if base.endswith("/") else base + "/"
        return index_names(client.get_bytes(url).decode("utf-8", "replace"))
    path = Path(base)
    if not path.is_dir():
        raise NotFoundError(f"{base}: no such directory")
    return sorted(os.listdir(path))


def _safe_parser() -> etree.XMLParser:
    # No entity expansion, no DTD, no network: a listing is data, never instructions.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_list_bucket(src: str, body: bytes) -> tuple[list[str], str | None]:
    """(common prefixes, next continuation token or None) of one ListObjectsV2 page."""
    try:
        root = etree.fromstring(body, parser=_safe_parser())
    except etree.XMLSyntaxError as e:
        raise PermanentError(f"{src}: not a valid S3 ListBucketResult: {e}") from e
    if etree.QName(root).localname != "ListBucketResult":
        raise PermanentError(f"{src}: expected ListBucketResult, got <{root.tag}>")
    ns = S3_NS if root.tag.startswith(S3_NS) else ""
    prefixes = [p.text or "" for p in root.iterfind(f"{ns}CommonPrefixes/{ns}Prefix")]
    truncated = (root.findtext(f"{ns}IsTruncated") or "").strip().lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    if truncated and not token:
        raise PermanentError(f"{src}: IsTruncated without NextContinuationToken")
    return prefixes, token


def _is_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def list_prefixes(client: HttpClient, base: str, prefix: str = "") -> Iterator[str]:
    """Folder names directly under `base` that start with `prefix`, lazily, in sorted order."""
    if not is_url(base):
        path = Path(base)
        if not path.is_dir():
            raise NotFoundError(f"{base}: no such directory")
        yield from sorted(n for n in os.listdir(path) if n.startswith(prefix))
        return
    root = base if base.endswith("/") else base + "/"
    token: str | None = None
    while True:
        query = {"list-type": "2", "delimiter": "/", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        url = root + "?" + urlencode(query)
        body = client.get_bytes(url)
        if token is None and _is_html(body):
            # A static file server (e.g. `python -m http.server` over the mirror), not S3.
            html = body.decode("utf-8", "replace")
            yield from sorted(n for n in index_names(html, folders=True) if n.startswith(prefix))
            return
        prefixes, token = parse_list_bucket(url, body)
        for p in prefixes:
            yield p[:-1] if p.endswith("/") else p
        if token is None:
            return
