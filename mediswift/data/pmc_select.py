"""Selecting PMC Open Access articles from the PMC Cloud Service's per-article layout.

The bucket (https://pmc-oa-opendata.s3.amazonaws.com/) holds one folder per article version,
`PMC<id>.<ver>/`, with `PMC<id>.<ver>.xml` (JATS) and `PMC<id>.<ver>.json` (metadata:
`is_pmc_openaccess`, `is_retracted`, `license_code`, `xml_url` = `s3://pmc-oa-opendata/<key>?md5=`).

Selection (`select_pmc`) walks the folders in the bucket's sorted order, keeps the latest version
of each article, reads its metadata, keeps open-access and drops retracted articles (and, when
asked, licences that do not allow commercial use), and stops after `max_articles`: the same
recipe picks the same articles every time. Kept metadata is written to the raw folder; the XML is
fetched later in batches (`fetch_pmc_batch`), verified against the md5 in `xml_url`.

At full size (~5M articles, ~8M versions) selection is millions of small requests, so:
- metadata is read through its own pool of connections (`metadata_connections`: S3 takes many
  more than NCBI's FTP asks for), each thread keeping its connection alive, with a window of
  requests in flight while earlier answers are judged;
- for a bucket (a URL), the listing and every metadata body read are kept under
  `raw/pmc/.listing/<base hash>/` (`ListingStore`, `MetadataStore`): a later selection, for any
  recipe, replays them and lists only what sorts after the last folder known (`start-after`);
- when the bucket publishes its daily S3 inventory of the metadata objects (documented in the
  bucket's README: `inventory-reports/pmc-oa-opendata/metadata/<date>/manifest.json`, naming
  gzipped CSV files of Bucket, Key, LastModifiedDate, ETag), the newest one replaces the
  listing: one download instead of ~8,000 listing pages, and each key's ETag (the md5 of the
  JSON) tells which cached bodies are still current, so a changed article (e.g. retracted) is
  read again. The inventory lags the bucket by up to a day; folders sorting after its last one
  are still listed. Without it (the mirror has none) a cached body is taken as current, and a
  folder added between known ones is found only by a fresh cache (delete the folder).
A local folder is read directly every time: there a listing or a file costs no request.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from mediswift.data.http import HttpClient, NotFoundError, PermanentError, is_url, join
from mediswift.data.listing import (
    Entry,
    ListingStore,
    cached_prefixes,
    list_prefixes,
)
from mediswift.data.pmc_files import (
    FOLDER_RE,
    PmcArticle,
    allows_commercial,
    article_from_metadata,
    store_file,
)
from mediswift.data.pmc_inventory import (
    inventory_entries,
    json_object,
    latest_inventory,
    latest_versions,
)
from mediswift.data.pmc_store import MetadataStore, cache_dir, open_stores

log = logging.getLogger(__name__)


def _refresh_from_inventory(
    client: HttpClient, base: str, store: ListingStore, workdir: Path
) -> None:
    """Load the bucket's newest inventory into `store` when it is newer than what it holds."""
    date = latest_inventory(client, base)
    held = store.source or ""
    if date is None or (held.startswith("inventory:") and held >= f"inventory:{date}"):
        return
    log.info("%s: loading the metadata inventory of %s", base, date)
    store.replace(inventory_entries(client, base, date, workdir), f"inventory:{date}")


def _listing(
    client: HttpClient, base: str, store: ListingStore | None, workdir: Path
) -> Iterator[Entry]:
    """Article folders in the bucket's order: from the store and what follows it, or (no
    store) listed afresh."""
    if store is None:
        return ((f, None) for f in list_prefixes(client, base, "PMC"))
    _refresh_from_inventory(client, base, store, workdir)
    return cached_prefixes(client, base, store, "PMC", keep=lambda n: bool(FOLDER_RE.match(n)))


# -- reading metadata -------------------------------------------------------------------------


Body = tuple[str, str, bytes | None, bool]  # (folder, source URL, body or None, from the store)


def _read_metadata(client: HttpClient, base: str, folder: str) -> Body:
    src = join(base, f"{folder}/{folder}.json")
    try:
        return folder, src, client.get_bytes(src), False
    except NotFoundError:
        return folder, src, None, False


def _known(base: str, folder: str, body: bytes) -> Future[Body]:
    done: Future[Body] = Future()
    done.set_result((folder, join(base, f"{folder}/{folder}.json"), body, True))
    return done


def _chunks(items: Iterator[Entry], n: int) -> Iterator[list[Entry]]:
    while chunk := list(itertools.islice(items, n)):
        yield chunk


def _kept(store: MetadataStore | None, body: Body) -> Body:
    """`body`, remembered in `store` when it came from the bucket."""
    folder, _, data, known = body
    if store is not None and data is not None and not known:
        store.remember(folder, data)
    return body


def read_bodies(
    client: HttpClient, base: str, entries: Iterator[Entry], store: MetadataStore | None
) -> Iterator[Body]:
    """The metadata of each entry, in order: stored bodies without a request, the others
    through `client.max_connections` threads, keeping up to 4 requests a thread queued ahead
    of the caller so the connections stay busy while it works. Every body read is remembered
    in `store`, also those read ahead of a caller that stopped (close this generator before
    the store); requests not yet started then are cancelled."""
    window = 4 * client.max_connections
    pending: deque[Future[Body]] = deque()
    try:
        with ThreadPoolExecutor(client.max_connections) as pool:
            try:
                for chunk in _chunks(entries, window):
                    known = store.lookup(chunk) if store is not None else {}
                    for folder, _ in chunk:
                        if folder in known:
                            pending.append(_known(base, folder, known[folder]))
                        else:
                            pending.append(pool.submit(_read_metadata, client, base, folder))
                        while len(pending) > window:
                            yield _kept(store, pending.popleft().result())
                while pending:
                    yield _kept(store, pending.popleft().result())
            finally:
                for f in pending:
                    f.cancel()
    finally:  # the pool has finished what it started: keep it for the next selection
        for f in pending:
            if not f.cancelled() and f.exception() is None:
                _kept(store, f.result())


def judge(
    src: str, folder: str, body: bytes | None, commercial_only: bool, skipped: Counter[str]
) -> PmcArticle | None:
    """The article to fetch, or None with the reason counted in `skipped`."""
    if body is None:
        log.warning("%s: no metadata, article skipped", src)
        skipped["missing_metadata"] += 1
        return None
    meta = json_object(src, body)
    if meta.get("is_pmc_openaccess") is not True:
        skipped["not_open_access"] += 1
    elif meta.get("is_retracted") is True:
        skipped["retracted"] += 1
    elif commercial_only and not allows_commercial(meta.get("license_code")):
        skipped["non_commercial"] += 1
    else:
        return article_from_metadata(src, folder, meta)
    return None


def _judge_current(
    client: HttpClient,
    base: str,
    body: Body,
    commercial_only: bool,
    skipped: Counter[str],
    store: MetadataStore | None,
) -> tuple[PmcArticle | None, bytes | None]:
    """`judge` the body; a stored body that fails is forgotten and read again first (the
    bucket may have been fixed since), so only the current metadata can fail a selection."""
    folder, src, data, known = body
    try:
        return judge(src, folder, data, commercial_only, skipped), data
    except PermanentError as e:
        if not known or store is None:
            raise
        log.warning("%s: stored metadata fails (%s), reading it again", src, e)
    store.forget(folder)
    _, _, data, _ = _kept(store, _read_metadata(client, base, folder))
    return judge(src, folder, data, commercial_only, skipped), data


def select_pmc(
    client: HttpClient,
    base: str,
    raw: Path,
    max_articles: int | None = None,
    commercial_only: bool = False,
    metadata_connections: int | None = None,
    cache: bool = True,
) -> tuple[list[PmcArticle], dict[str, int]]:
    """Choose the articles to fetch (sorted order) and store their metadata under `raw/pmc/`.

    `metadata_connections` (default: the client's limit) reads metadata in parallel; `cache`
    keeps the listing and the metadata read for the next selection from the same bucket."""
    skipped: Counter[str] = Counter()
    kept: list[PmcArticle] = []
    if max_articles == 0:
        return kept, {}
    n = metadata_connections or client.max_connections
    reader = replace(client, max_connections=n, _local=threading.local())
    written = 0
    try:
        with open_stores(raw, base, cache and is_url(base)) as stores:
            listing, meta = stores or (None, None)
            workdir = cache_dir(raw, base) / "inventory"
            folders = latest_versions(_listing(client, base, listing, workdir), skipped)
            with closing(read_bodies(reader, base, folders, meta)) as bodies:
                for body in bodies:
                    article, data = _judge_current(
                        reader, base, body, commercial_only, skipped, meta
                    )
                    if article is None or data is None:
                        continue
                    written += store_file(raw / "pmc" / article.metadata_key, data)
                    kept.append(article)
                    if max_articles is not None and len(kept) >= max_articles:
                        break
    finally:
        if written:
            os.sync()  # once for all the metadata files written (see `store_file`)
    return kept, dict(skipped)
