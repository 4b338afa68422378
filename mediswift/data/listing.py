"""Listing what an upstream folder holds: an HTML index, an S3 bucket, or a local directory.

- NCBI serves `pubmed/baseline/` and `pubmed/updatefiles/` as an Apache-style HTML index: one
  `<a href="pubmed26n0001.xml.gz">` per file. `list_index` keeps hrefs that name an entry of
  this very folder (no `/`, no query, no fragment), so a hostile page cannot point us elsewhere.
- The PMC Cloud Service is an S3 bucket: `list_prefixes` pages through ListObjectsV2
  (`?list-type=2&delimiter=/`, `continuation-token`) and yields the common prefixes, i.e. the
  per-article folders, in the bucket's lexicographic order; `after` starts the listing past a
  folder already known (`start-after`), so a listing can be continued where an earlier one
  stopped.
- `ListingStore` keeps a listing on disk between runs (SQLite, one transaction per page, so a
  killed run leaves a consistent prefix of the listing), and `cached_prefixes` replays it and
  then lists only what sorts after its last name.
- A local directory (the mirror as a folder) answers both with a sorted directory listing, so
  the order is the same either way. A mirror served by a plain static file server (answering
  the bucket URL with an HTML index) is read through its index the same way.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


def start_after(folder: str) -> str:
    """The S3 `start-after` key that skips `folder` and everything under it.

    Why not `folder` itself: the keys inside it (`folder/x.json`) sort after `folder`, and S3
    would roll them up into the same common prefix again. '0' is the character after '/', so
    every key under `folder/` sorts below `folder0` and every later folder above it."""
    return folder + "0"


def _after(names: Iterable[str], after: str | None) -> list[str]:
    """Names sorting after folder `after` in the bucket's order (that of `name/`)."""
    return [n for n in names if after is None or n + "/" > start_after(after)]


def list_prefix_pages(
    client: HttpClient, base: str, prefix: str = "", after: str | None = None
) -> Iterator[list[str]]:
    """Pages of the folder names under `base` that start with `prefix` and sort after folder
    `after` (one page per request: a caller can store each before asking for the next)."""
    if not is_url(base):
        path = Path(base)
        if not path.is_dir():
            raise NotFoundError(f"{base}: no such directory")
        yield _after(sorted(n for n in os.listdir(path) if n.startswith(prefix)), after)
        return
    root = base if base.endswith("/") else base + "/"
    token: str | None = None
    while True:
        query = {"list-type": "2", "delimiter": "/", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        elif after is not None:
            query["start-after"] = start_after(after)
        url = root + "?" + urlencode(query)
        body = client.get_bytes(url)
        if token is None and _is_html(body):
            # A static file server (e.g. `python -m http.server` over the mirror), not S3.
            html = body.decode("utf-8", "replace")
            names = sorted(n for n in index_names(html, folders=True) if n.startswith(prefix))
            yield _after(names, after)
            return
        prefixes, token = parse_list_bucket(url, body)
        yield [p[:-1] if p.endswith("/") else p for p in prefixes]
        if token is None:
            return


def list_prefixes(
    client: HttpClient, base: str, prefix: str = "", after: str | None = None
) -> Iterator[str]:
    """Folder names directly under `base` that start with `prefix`, lazily, in sorted order."""
    for names in list_prefix_pages(client, base, prefix, after):
        yield from names


def connect(path: Path) -> sqlite3.Connection:
    """A connection that commits only what `transaction` wraps (no implicit transactions), with
    the default rollback journal: it works on any local file system, WAL does not on all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, timeout=60, isolation_level=None)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """All statements inside land together or not at all."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


Entry = tuple[str, str | None]  # (name, ETag of what the name stands for, when known)


class ListingStore:
    """A sorted listing kept between runs in one SQLite file: names with an optional ETag, the
    last name listed, and where the listing came from (`list` or an inventory's date).

    Why SQLite: a listing of millions of names must be extended page by page, replayed in
    order and looked up without holding it in memory, and each page must land whole or not at
    all; a transaction per page gives that, and the ordered primary key gives the order.
    Names compare as bytes, as S3 orders keys. Used from one thread (the one that opened it).
    """

    FORMAT = "1"

    def __init__(self, path: Path):
        self.db = connect(path)
        with transaction(self.db):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS entries "
                "(name TEXT PRIMARY KEY, etag TEXT) WITHOUT ROWID"
            )
            self.db.execute("CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v TEXT)")
        if self.get("format") not in (None, self.FORMAT):
            self._reset()

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM state WHERE k = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set(self, **values: str | None) -> None:
        self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", list(values.items()))

    def _reset(self) -> None:
        with transaction(self.db):
            self.db.execute("DELETE FROM entries")
            self.db.execute("DELETE FROM state")

    @property
    def source(self) -> str | None:
        return self.get("source")

    @property
    def last(self) -> str | None:
        """The last name listed (filtered out or not): a continuation starts after it."""
        return self.get("last")

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def entries(self, chunk: int = 10_000) -> Iterator[Entry]:
        """Every entry in order, read a chunk at a time (keyset pagination, no open cursor
        while the caller works, so the caller may write between chunks)."""
        after = ""
        while rows := self.db.execute(
            "SELECT name, etag FROM entries WHERE name > ? ORDER BY name LIMIT ?", (after, chunk)
        ).fetchall():
            yield from rows
            after = rows[-1][0]

    def extend(self, entries: list[Entry], last: str | None) -> None:
        """Add one listed page and move `last` past it, atomically."""
        with transaction(self.db):
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", entries)
            self._set(format=self.FORMAT, source=self.source or "list", last=last)

    def replace(self, entries: Iterable[Entry], source: str) -> None:
        """Make the store hold exactly `entries` (a published inventory), atomically."""
        with transaction(self.db):
            self.db.execute("DELETE FROM entries")
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", entries)
            row = self.db.execute("SELECT max(name) FROM entries").fetchone()
            self._set(format=self.FORMAT, source=source, last=row[0])


def cached_prefixes(
    client: HttpClient,
    base: str,
    store: ListingStore,
    prefix: str = "",
    keep: Callable[[str], bool] = lambda name: True,
) -> Iterator[Entry]:
    """The entries of `store`, then the folders listed after its last name (`start-after`),
    each page stored as it arrives. Only names that `keep` accepts are stored and yielded.

    A listing stopped early (the caller had enough) continues next time where it stopped;
    a finished one asks only for what sorts after its end (new folders there)."""
    yield from store.entries()
    last = store.last
    for names in list_prefix_pages(client, base, prefix, after=last):
        page = [(n, None) for n in names if keep(n)]
        last = names[-1] if names else last
        store.extend(page, last)
        yield from page
