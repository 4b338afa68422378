"""PMC Open Access articles from the PMC Cloud Service's per-article layout.

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

import csv
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import threading
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mediswift.artifacts import safe_child, tmp_path
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, NotFoundError, PermanentError, is_url, join
from mediswift.data.listing import (
    Entry,
    ListingStore,
    cached_prefixes,
    connect,
    list_prefixes,
    transaction,
)

log = logging.getLogger(__name__)

FOLDER_RE = re.compile(r"^(?P<pmcid>PMC\d+)\.(?P<version>\d+)$")
BUCKET = "pmc-oa-opendata"
INVENTORY = "inventory-reports/pmc-oa-opendata/metadata"
INVENTORY_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
INVENTORY_KEY = re.compile(r"^metadata/(?P<folder>PMC\d+\.\d+)\.json$")
# Far above the ~8M article versions: past it an inventory is refused, not loaded forever.
MAX_INVENTORY_ROWS = 100_000_000
CACHE = ".listing"  # under raw/pmc/: the listing and metadata kept between selections
# Licences that allow commercial reuse (version numbers ignored); anything else, including an
# unknown or missing licence, counts as non-commercial.
COMMERCIAL = {("cc0",), ("cc", "0"), ("cc", "by"), ("cc", "by", "sa"), ("cc", "by", "nd")}
COMMERCIAL |= {("pd",), ("public", "domain"), ("cc", "pdm")}


def allows_commercial(code: str | None) -> bool:
    """True for CC0, CC BY, CC BY-SA, CC BY-ND (any version) and public domain marks."""
    tokens = re.split(r"[\s_\-]+", (code or "").strip().lower())
    if "nc" in tokens:
        return False
    tokens = [t for t in tokens if t and not re.fullmatch(r"v?\d+(\.\d+)*", t)]
    return tuple(tokens) in COMMERCIAL


@dataclass(frozen=True)
class PmcArticle:
    folder: str  # PMC123.1
    pmcid: str
    pmid: str | None
    license: str
    xml_key: str  # PMC123.1/PMC123.1.xml, relative to the bucket
    md5: str

    @property
    def metadata_key(self) -> str:
        return f"{self.folder}/{self.folder}.json"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_xml_url(src: str, xml_url: str) -> tuple[str, str]:
    """(bucket key, md5) from `s3://pmc-oa-opendata/<key>?md5=<hex>` (or the https form)."""
    parts = urlsplit(xml_url)
    if (
        parts.scheme == "s3"
        and parts.netloc == BUCKET
        or parts.scheme == "https"
        and parts.netloc == f"{BUCKET}.s3.amazonaws.com"
    ):
        key = parts.path.lstrip("/")
    else:
        raise PermanentError(f"{src}: xml_url {xml_url!r} is not in the {BUCKET} bucket")
    md5 = (parse_qs(parts.query).get("md5") or [""])[0].lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise PermanentError(f"{src}: xml_url {xml_url!r} carries no md5")
    return key, md5


def article_from_metadata(src: str, folder: str, meta: dict[str, Any]) -> PmcArticle:
    key, md5 = parse_xml_url(src, str(meta.get("xml_url", "")))
    if not key.startswith(folder + "/"):
        raise PermanentError(f"{src}: xml_url key {key!r} is outside the article's folder")
    pmid = meta.get("pmid")
    return PmcArticle(
        folder=folder,
        pmcid=FOLDER_RE.match(folder)["pmcid"],  # type: ignore[index]
        pmid=str(pmid) if pmid not in (None, "") else None,
        license=str(meta.get("license_code") or "unknown"),
        xml_key=key,
        md5=md5,
    )


def latest_versions(entries: Iterable[Entry], skipped: Counter[str]) -> Iterator[Entry]:
    """The latest version folder of each article. Versions of one article are adjacent in the
    sorted listing ('PMC12.1', 'PMC12.2' sort before 'PMC120.1'), so this stays lazy."""
    matched = (e for e in entries if FOLDER_RE.match(e[0]))
    for _, group in itertools.groupby(matched, key=lambda e: FOLDER_RE.match(e[0])["pmcid"]):  # type: ignore[index]
        versions = sorted(group, key=lambda e: int(FOLDER_RE.match(e[0])["version"]))  # type: ignore[index]
        if len(versions) > 1:
            skipped["older_version"] += len(versions) - 1
        yield versions[-1]


# -- the inventory the bucket publishes ---------------------------------------------------------


def latest_inventory(client: HttpClient, base: str) -> str | None:
    """The date folder of the newest metadata inventory under bucket `base`, or None."""
    names = list_prefixes(client, base, INVENTORY + "/")
    dates = [n.rsplit("/", 1)[-1] for n in names]
    return max((d for d in dates if INVENTORY_DATE.match(d)), default=None)


def _inventory_columns(src: str, manifest: dict[str, Any]) -> tuple[int, int]:
    """Positions of Key and ETag in the inventory's CSV rows, from the manifest's schema."""
    if manifest.get("fileFormat", "CSV") != "CSV":
        raise PermanentError(f"{src}: inventory format {manifest['fileFormat']!r} is not CSV")
    columns = [c.strip() for c in str(manifest.get("fileSchema", "")).split(",")]
    if "Key" not in columns or "ETag" not in columns:
        raise PermanentError(f"{src}: fileSchema {columns} lacks Key or ETag")
    return columns.index("Key"), columns.index("ETag")


def _etag(value: str) -> str | None:
    """An ETag as a bare md5 (None when it is not one, e.g. a multipart upload's)."""
    tag = value.strip().strip('"').lower()
    return tag if re.fullmatch(r"[0-9a-f]{32}", tag) else None


def _inventory_rows(path: Path, key_col: int, etag_col: int) -> Iterator[Entry]:
    """(folder, ETag) of each article version's metadata object in one gzipped CSV file (S3
    inventories URL-encode keys); other keys are skipped."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if len(row) <= max(key_col, etag_col):
                continue
            if m := INVENTORY_KEY.match(unquote(row[key_col])):
                yield m["folder"], _etag(row[etag_col])


def _inventory_file(client: HttpClient, base: str, spec: Any, workdir: Path) -> Path:
    """One data file the manifest names, fetched into `workdir` and checked against its md5."""
    key = str(spec.get("key", "")) if isinstance(spec, dict) else ""
    if not key.startswith("inventory-reports/") or not key.endswith(".csv.gz"):
        raise PermanentError(f"{base}: inventory names an unexpected file {key!r}")
    try:
        dest = safe_child(workdir, key.rsplit("/", 1)[-1])
    except ValueError as e:
        raise PermanentError(str(e)) from e
    md5 = spec.get("MD5checksum")
    fetch_file(client, join(base, key), dest, md5 if isinstance(md5, str) else None)
    return dest


def inventory_entries(client: HttpClient, base: str, date: str, workdir: Path) -> Iterator[Entry]:
    """(folder, ETag) of every article version in the inventory of `date`, file by file (each
    data file is deleted once read: only the store keeps what it said)."""
    src = join(base, f"{INVENTORY}/{date}/manifest.json")
    manifest = _json_object(src, client.get_bytes(src))
    key_col, etag_col = _inventory_columns(src, manifest)
    rows = 0
    for spec in manifest.get("files") or []:
        path = _inventory_file(client, base, spec, workdir)
        try:
            for entry in _inventory_rows(path, key_col, etag_col):
                rows += 1
                if rows > MAX_INVENTORY_ROWS:
                    raise PermanentError(f"{src}: more than {MAX_INVENTORY_ROWS} rows")
                yield entry
        finally:
            path.unlink(missing_ok=True)


# -- what earlier selections read -------------------------------------------------------------


class MetadataStore:
    """Metadata bodies already read, by article folder, with the md5 of each body.

    Why the md5: S3's ETag of a small object is the md5 of its bytes, so a body whose md5
    equals the ETag the inventory lists now is the current one. With no ETag known (a plain
    listing names folders only) a body read before is taken as current. Bodies are stored
    zlib-compressed (~1 KB of JSON each, millions of them). Used from one thread."""

    BATCH = 1000  # bodies a transaction: few commits, little lost to a crash

    def __init__(self, path: Path):
        self.db = connect(path)
        self.pending: list[tuple[str, bytes]] = []
        with transaction(self.db):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS meta "
                "(folder TEXT PRIMARY KEY, md5 TEXT NOT NULL, body BLOB NOT NULL) WITHOUT ROWID"
            )

    def close(self) -> None:
        """Store what is pending, then close (also when the selection failed: what it read
        before the failure is not read again)."""
        try:
            self.add(self.pending)
        finally:
            self.db.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM meta").fetchone()[0]

    def lookup(self, entries: list[Entry]) -> dict[str, bytes]:
        """The stored bodies that are still current for these (folder, ETag) entries."""
        etags = dict(entries)
        marks = ",".join("?" * len(etags))
        rows = self.db.execute(
            f"SELECT folder, md5, body FROM meta WHERE folder IN ({marks})", list(etags)
        )
        return {f: zlib.decompress(b) for f, md5, b in rows if etags[f] in (None, md5)}

    def remember(self, folder: str, body: bytes) -> None:
        """Keep `body` (stored with the next batch, or at `close`)."""
        self.pending.append((folder, body))
        if len(self.pending) >= self.BATCH:
            self.add(self.pending)
            self.pending = []

    def forget(self, folder: str) -> None:
        self.pending = [(f, b) for f, b in self.pending if f != folder]
        with transaction(self.db):
            self.db.execute("DELETE FROM meta WHERE folder = ?", (folder,))

    def add(self, bodies: list[tuple[str, bytes]]) -> None:
        rows = [(f, hashlib.md5(b).hexdigest(), zlib.compress(b, 1)) for f, b in bodies]
        with transaction(self.db):
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?, ?)", rows)


def cache_dir(raw: Path, base: str) -> Path:
    """Where selections from `base` keep their listing and metadata (one folder per bucket or
    mirror URL, so two sources never mix)."""
    digest = hashlib.sha256(base.rstrip("/").encode()).hexdigest()[:16]
    return raw / "pmc" / CACHE / digest


@contextmanager
def _stores(
    raw: Path, base: str, enabled: bool
) -> Iterator[tuple[ListingStore, MetadataStore] | None]:
    if not enabled:
        yield None
        return
    folder = cache_dir(raw, base)
    listing = ListingStore(folder / "listing.sqlite")
    try:
        meta = MetadataStore(folder / "metadata.sqlite")
        try:
            yield listing, meta
        finally:
            meta.close()
    finally:
        listing.close()


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


def _json_object(src: str, body: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(body)
    except ValueError as e:
        raise PermanentError(f"{src}: metadata is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise PermanentError(f"{src}: metadata is not a JSON object")
    return meta


def judge(
    src: str, folder: str, body: bytes | None, commercial_only: bool, skipped: Counter[str]
) -> PmcArticle | None:
    """The article to fetch, or None with the reason counted in `skipped`."""
    if body is None:
        log.warning("%s: no metadata, article skipped", src)
        skipped["missing_metadata"] += 1
        return None
    meta = _json_object(src, body)
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
        with _stores(raw, base, cache and is_url(base)) as stores:
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
                    written += _store(raw / "pmc" / article.metadata_key, data)
                    kept.append(article)
                    if max_articles is not None and len(kept) >= max_articles:
                        break
    finally:
        if written:
            os.sync()  # once for all the metadata files written (see `_store`)
    return kept, dict(skipped)


def _store(dest: Path, body: bytes) -> bool:
    """Write `body` to `dest` unless that file already holds it; True when written.

    `dest` is named by a folder that matched FOLDER_RE (PMC, digits, a dot, digits), so it
    cannot leave the raw folder: no `safe_child`, whose two `resolve` calls were half the time
    of a selection from the stores. Atomic (a temporary name renamed into place) but not synced
    file by file: a full selection writes millions of these, and an fsync each (~1-4 ms here)
    would make it hours of waiting in one thread. The selection syncs once at its end; a file
    that a crash before then left empty is rewritten by the next selection, which compares
    every file with its body."""
    if dest.is_file() and dest.read_bytes() == body:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(dest)
    try:
        tmp.write_bytes(body)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def fetch_pmc_batch(
    client: HttpClient, base: str, raw: Path, articles: list[PmcArticle]
) -> list[dict[str, Any]]:
    """Fetch the XML of a batch of articles (md5-verified) into `raw/pmc/`; manifest entries."""

    def one(a: PmcArticle) -> dict[str, Any]:
        try:
            dest = safe_child(raw, f"pmc/{a.xml_key}")
        except ValueError as e:
            raise PermanentError(str(e)) from e
        result = fetch_file(client, join(base, a.xml_key), dest, a.md5)
        return {
            "path": f"raw/pmc/{a.xml_key}",
            "metadata": f"raw/pmc/{a.metadata_key}",
            "pmcid": a.pmcid,
            "pmid": a.pmid,
            "license": a.license,
            "md5": result.md5,
            "fetched": result.fetched,
        }

    with ThreadPoolExecutor(client.max_connections) as pool:
        return list(pool.map(one, articles))
