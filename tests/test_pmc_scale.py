"""PMC selection at full size: the listing and metadata kept between selections, the bucket's
inventory, and the metadata connections, against a loopback imitation of the S3 bucket.

`Bucket` answers ListObjectsV2 as S3 does (prefix, delimiter, `start-after`,
`continuation-token`, small pages) and GETs of objects; it logs every request, counts the TCP
connections it accepts and the object requests in flight at once, so each test can say exactly what
a selection asked for.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

from mediswift.data.http import HttpClient, PermanentError
from mediswift.data.pmc_inventory import INVENTORY
from mediswift.data.pmc_select import select_pmc
from mediswift.data.pmc_store import MetadataStore, cache_dir

TOP = "\U0010ffff"  # sorts after any character a key can hold


class Bucket(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, page_size: int = 3, delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), S3Handler)
        self.objects: dict[str, bytes] = {}
        self.page_size, self.delay_s = page_size, delay_s
        self.log: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.connections = self.inflight = self.max_inflight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def process_request(self, request, client_address) -> None:
        with self.lock:
            self.connections += 1  # one per TCP connection, however many requests it carries
        super().process_request(request, client_address)

    def metadata_gets(self) -> list[str]:
        return [p for p, q in self.log if p.endswith(".json") and "/metadata/" not in p]

    def listings(self, prefix: str = "PMC") -> list[dict[str, str]]:
        return [q for p, q in self.log if p == "/" and q.get("prefix") == prefix]

    def list_page(self, query: dict[str, str]) -> bytes:
        """One ListObjectsV2 page: keys after `start-after` (or the continuation point), common
        prefixes rolled up at the delimiter, at most `page_size` entries."""
        prefix, delim = query.get("prefix", ""), query.get("delimiter", "")
        token = query.get("continuation-token")
        after = base64.b64decode(token).decode() if token else query.get("start-after", "")
        keys = sorted(self.objects)
        items: list[tuple[str, str]] = []  # ("p", prefix) or ("k", key)
        for key in keys[bisect.bisect_right(keys, after) :]:
            if not key.startswith(prefix) or (items and key <= items[-1][1]):
                continue
            cut = key.find(delim, len(prefix)) if delim else -1
            items.append(("p", key[: cut + 1] + TOP) if cut >= 0 else ("k", key))
        page, more = items[: self.page_size], len(items) > self.page_size
        body = "".join(
            f"<CommonPrefixes><Prefix>{escape(v.removesuffix(TOP))}</Prefix></CommonPrefixes>"
            if kind == "p"
            else f"<Contents><Key>{escape(v)}</Key><ETag>&quot;{md5(self.objects[v])}&quot;"
            f"</ETag><Size>{len(self.objects[v])}</Size></Contents>"
            for kind, v in page
        )
        nxt = base64.b64encode(page[-1][1].encode()).decode() if more else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{nxt}</NextContinuationToken>" if more else "")
            + body
            + "</ListBucketResult>"
        ).encode()


class S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Bucket

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with srv.lock:
            srv.log.append((parts.path, query))
        if parts.path == "/" and query.get("list-type") == "2":
            return self._reply(200, srv.list_page(query))
        with srv.lock:  # objects only: listing pages come from another pool
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        try:
            if srv.delay_s:
                time.sleep(srv.delay_s)
            body = srv.objects.get(unquote(parts.path.lstrip("/")))
            self._reply(404, b"NoSuchKey") if body is None else self._reply(200, body)
        finally:
            with srv.lock:
                srv.inflight -= 1

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def bucket():
    srv = Bucket()
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def client(**kw) -> HttpClient:
    opts = {"backoff_s": 0.01, "max_retries": 2, "timeout_s": 10.0, "max_connections": 3}
    return HttpClient(contact_email="tests@example.org", **{**opts, **kw})


def put_article(b: Bucket, folder: str, **meta) -> None:
    """An article version: its JATS and its metadata (open access, CC BY unless told)."""
    xml = f"<article><front>{folder}</front></article>".encode()
    b.objects[f"{folder}/{folder}.xml"] = xml
    fields = {
        "pmcid": folder.split(".")[0],
        "pmid": folder.split(".")[0][3:],
        "is_pmc_openaccess": True,
        "is_retracted": False,
        "license_code": "CC BY",
        "xml_url": f"s3://pmc-oa-opendata/{folder}/{folder}.xml?md5={md5(xml)}",
    }
    b.objects[f"{folder}/{folder}.json"] = json.dumps({**fields, **meta}).encode()


def fill(b: Bucket) -> list[str]:
    """Twelve article versions of eleven articles, a few of them not to be kept."""
    folders = [f"PMC{n}.1" for n in (11, 12, 120, 13, 2, 3, 301, 4, 5, 6)] + ["PMC12.2"]
    for f in folders:
        put_article(b, f)
    put_article(b, "PMC13.1", is_pmc_openaccess=False)
    put_article(b, "PMC3.1", is_retracted=True)
    put_article(b, "PMC4.1", license_code="CC BY-NC")
    b.objects["README.txt"] = b"not an article"
    return sorted(folders)


def select(b: Bucket, raw: Path, **kw):
    return select_pmc(client(), b.url, raw, **kw)


def publish_inventory(b: Bucket, date: str) -> None:
    """The S3 inventory of the metadata objects, laid out as the bucket's README documents:
    a dated manifest naming gzipped CSV files of (Bucket, Key, LastModifiedDate, ETag)."""
    rows = [
        f'"pmc-oa-opendata","metadata/{k.split("/")[0]}.json","2026-01-08T11:47:59.000Z","{md5(v)}"'
        for k, v in sorted(b.objects.items())
        if k.endswith(".json") and not k.startswith("inventory-reports/")
    ]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    key = f"{INVENTORY}/data/{md5(data)}.csv.gz"
    b.objects[key] = data
    manifest = {
        "sourceBucket": "pmc-oa-opendata",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, LastModifiedDate, ETag",
        "files": [{"key": key, "size": len(data), "MD5checksum": md5(data)}],
    }
    b.objects[f"{INVENTORY}/{date}/manifest.json"] = json.dumps(manifest).encode()


# -- tests ------------------------------------------------------------------------------------


def test_second_selection_asks_for_nothing_already_known(bucket: Bucket, tmp_path: Path):
    fill(bucket)
    first = select(bucket, tmp_path / "raw")
    assert len(bucket.listings()) == 4  # 11 folders, 3 a page
    assert len(bucket.metadata_gets()) == 10  # every latest version once (PMC12.1 is older)
    del bucket.log[:]

    again = select(bucket, tmp_path / "raw")
    assert again == first
    assert bucket.metadata_gets() == []
    # One listing request, and it starts after the last folder known: nothing is listed twice.
    assert bucket.listings() == [
        {"list-type": "2", "delimiter": "/", "prefix": "PMC", "start-after": "PMC6.10"}
    ]
    # The same articles as a selection that keeps nothing, in a fresh raw folder.
    uncached = select(bucket, tmp_path / "fresh", cache=False)
    assert uncached == first
    kept, skipped = first
    assert skipped == {
        "older_version": 1, "not_open_access": 1, "retracted": 1,
    }  # fmt: skip
    assert [a.folder for a in kept][:3] == ["PMC11.1", "PMC12.2", "PMC120.1"]


def test_a_stopped_listing_continues_and_new_articles_are_found_after_it(
    bucket: Bucket, tmp_path: Path
):
    folders = fill(bucket)
    for n in range(30):
        put_article(bucket, f"PMC7{n:03d}.1")
        folders.append(f"PMC7{n:03d}.1")
    raw = tmp_path / "raw"
    select(bucket, raw, max_articles=2)
    assert len(bucket.listings()) < 14  # stopped early: the rest of the bucket was not listed
    store = MetadataStore(cache_dir(raw, bucket.url) / "metadata.sqlite")
    judged = {f for (f,) in store.db.execute("SELECT folder FROM meta")}
    store.close()
    del bucket.log[:]

    full = select(bucket, raw, commercial_only=True)
    assert "start-after" in bucket.listings()[0]  # continued, not listed from the start
    gets = {p.split("/")[1] for p in bucket.metadata_gets()}
    latest = set(folders) - {"PMC12.1"}
    assert gets.isdisjoint(judged) and gets | judged == latest  # each body read once in all
    assert full == select(bucket, tmp_path / "fresh", cache=False, commercial_only=True)
    del bucket.log[:]

    put_article(bucket, "PMC999.1")  # sorts after every folder known
    newest = select(bucket, raw, commercial_only=True)
    assert [q.get("start-after") for q in bucket.listings()] == ["PMC7029.10"]
    assert bucket.metadata_gets() == ["/PMC999.1/PMC999.1.json"]
    assert newest[0] == full[0] + [a for a in newest[0] if a.folder == "PMC999.1"]
    assert newest == select(bucket, tmp_path / "fresh2", cache=False, commercial_only=True)


def test_metadata_read_before_a_failure_is_kept_and_a_bad_body_read_again(
    bucket: Bucket, tmp_path: Path
):
    fill(bucket)
    bucket.objects["PMC301.1/PMC301.1.json"] = b"{not json"
    with pytest.raises(PermanentError, match="PMC301.1.json: metadata is not valid JSON"):
        select(bucket, tmp_path / "raw")
    assert len(bucket.metadata_gets()) == 10  # PMC4.1 and after were read ahead: kept too
    del bucket.log[:]
    with pytest.raises(PermanentError, match="PMC301.1.json"):
        select(bucket, tmp_path / "raw")  # still broken upstream: it fails again, not cached
    assert bucket.metadata_gets() == ["/PMC301.1/PMC301.1.json"]

    put_article(bucket, "PMC301.1")  # repaired upstream
    del bucket.log[:]
    selected = select(bucket, tmp_path / "raw")
    assert bucket.metadata_gets() == ["/PMC301.1/PMC301.1.json"]  # the rest from the store
    assert selected == select(bucket, tmp_path / "fresh", cache=False)


def test_inventory_replaces_the_listing_and_etags_find_changed_metadata(
    bucket: Bucket, tmp_path: Path
):
    fill(bucket)
    publish_inventory(bucket, "2026-01-18T01-00Z")
    raw = tmp_path / "raw"
    first = select(bucket, raw)
    # No page of the bucket was listed: only what sorts after the inventory's last folder.
    assert [q.get("start-after") for q in bucket.listings()] == ["PMC6.10"]
    assert len(bucket.metadata_gets()) == 10
    assert not list((cache_dir(raw, bucket.url) / "inventory").glob("*.csv.gz"))
    assert first == select(bucket, tmp_path / "fresh", cache=False)

    # A day later one article was retracted: its metadata's ETag changed in the new inventory.
    put_article(bucket, "PMC2.1", is_retracted=True)
    publish_inventory(bucket, "2026-01-19T01-00Z")
    del bucket.log[:]
    kept, skipped = select(bucket, raw)
    assert bucket.metadata_gets() == ["/PMC2.1/PMC2.1.json"]
    assert "PMC2.1" not in [a.folder for a in kept] and skipped["retracted"] == 2
    assert (kept, skipped) == select(bucket, tmp_path / "fresh2", cache=False)


def test_inventory_files_are_checked_against_the_manifest(bucket: Bucket, tmp_path: Path):
    fill(bucket)
    publish_inventory(bucket, "2026-01-18T01-00Z")
    data_key = next(k for k in bucket.objects if k.endswith(".csv.gz"))
    bucket.objects[data_key] = gzip.compress(b'"pmc-oa-opendata","metadata/PMC1.1.json","x","y"')
    with pytest.raises(PermanentError, match="md5 mismatch"):
        select(bucket, tmp_path / "raw")


def test_metadata_has_its_own_connections_kept_alive(bucket: Bucket, tmp_path: Path):
    for n in range(40):
        put_article(bucket, f"PMC{1000 + n}.1")
    bucket.delay_s = 0.05  # each metadata request takes a while: the pool fills up
    kept, _ = select_pmc(client(max_connections=2), bucket.url, tmp_path / "a")
    assert len(kept) == 40 and bucket.max_inflight == 2  # no setting: the client's limit

    bucket.max_inflight, bucket.connections = 0, 0
    kept, _ = select_pmc(
        client(max_connections=2), bucket.url, tmp_path / "b", metadata_connections=6
    )
    assert len(kept) == 40 and bucket.max_inflight == 6
    # 40 metadata requests and 15 listing pages over at most one connection per thread.
    assert bucket.connections <= 6 + 1
