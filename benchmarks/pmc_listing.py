"""PMC selection at full size: listing and metadata reads against a loopback S3 imitation.

    .venv/bin/python benchmarks/pmc_listing.py [--articles 1000000] [--sample 20000]
        [--latency-ms 20] [--latency-sample 2000] [--s3-get-ms 30] [--s3-page-ms 150]

The bucket is generated, not written: a child process (its CPU and memory are not ours) holds
the sorted names of --articles article folders (PMC ids spread up to ~12M, every 20th article
with a second version, as the real bucket's ~8M versions of ~5M articles) and answers
ListObjectsV2 pages of 1,000 (`start-after`, `continuation-token`) and each metadata GET with
a JSON body of the real one's fields and size (~1 KB) made from the folder name. It serves the
same folders as three buckets: `plain` (no inventory), `inv` (with the daily S3 inventory the
real bucket publishes: a manifest and one gzipped CSV of every metadata key and ETag) and
`slow` (each object GET waits --latency-ms, standing for the round trip to S3).

Each phase runs in its own process (its peak RSS is its own), in order, on one home:
  1. listing, cold: every folder through ListObjectsV2 into the listing store;
  2. listing, from the store: the same, replayed (one `start-after` request for news);
  3. inventory, cold: the inventory loaded into a fresh store instead of listing;
  4. selection, cold: `select_pmc` of the first --sample articles, 32 metadata connections;
  5. selection, from the store: the same selection again (no metadata request);
  6. selection at --latency-ms per request, with 3 and with 32 metadata connections.
Selections are sampled (a cold selection of all 1M would take ~10 min of this machine's two
cores, most of it the imitation's own request handling) and extrapolated per article.

Expectations written before measuring: loopback listing is bound by parsing 1,000-prefix pages
and committing them (~50-100k folders/s); the store replays ~10x faster. A cold selection costs
a request (~0.5 ms of client CPU in `requests`) plus judging and writing the metadata file:
~1-2k articles/s on two shared cores; from the store ~10-20k/s. At 20 ms a request, 3
connections cap at 150/s and 32 at ~1,600/s, less what the CPU allows.

Measured (2 shared cores, load average ~1.5; the README has the table): listing 203k folders/s
(faster than expected: the page parse is lxml in C), 12x that from the store, the inventory
271k/s; a cold selection 906 articles/s, from the stores 16k/s (the first version of this ran
at 3.4k/s: half of it went to resolving each metadata file's path twice, now built from the
validated folder name); at 20 ms a request 146/s with 3 connections and 964/s with 32 (the
CPU, shared with the imitation, is the cap there).
"""

# ruff: noqa: E402  (the import path is fixed up first, see below)
from __future__ import annotations

import argparse
import bisect
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mediswift.data.http import HttpClient
from mediswift.data.listing import ListingStore, cached_prefixes
from mediswift.data.pmc_inventory import INVENTORY, inventory_entries, latest_inventory
from mediswift.data.pmc_select import select_pmc

DATE = "2026-01-18T01-00Z"
LICENSES = ["CC BY", "CC BY", "CC BY", "CC BY-NC", "CC BY-NC-ND", "CC0", "CC BY-NC-SA", "TDM"]
TITLE = "Effects of a randomised intervention on outcomes in a cohort of adult patients " * 2

# ---------------------------------------------------------------------------- the bucket


def folders(articles: int) -> list[str]:
    """`articles` PMC ids spread over 1..~12M, every 20th with a second version."""
    out = []
    for i in range(articles):
        n = 1 + i * (12_000_000 // max(articles, 1)) + i % 7
        out.append(f"PMC{n}.1")
        if i % 20 == 0:
            out.append(f"PMC{n}.2")
    return out


def metadata_body(folder: str) -> bytes:
    """A metadata JSON with the real one's fields and size, made from the folder name."""
    h = int(hashlib.md5(folder.encode()).hexdigest()[:12], 16)
    pmcid, version = folder.split(".")
    url = f"s3://pmc-oa-opendata/{folder}/{folder}"
    meta = {
        "pmcid": pmcid,
        "version": int(version),
        "pmid": str(h % 39_000_000),
        "doi": f"10.{1000 + h % 9000}/journal.{h % 10**9}",
        "title": TITLE[: 60 + h % 100],
        "citation": f"J Biomed Res. {1990 + h % 35};{h % 90}({h % 12}):{h % 900}-{h % 900 + 9}",
        "is_pmc_openaccess": h % 50 != 0,
        "is_manuscript": h % 9 == 0,
        "is_historical_ocr": False,
        "is_retracted": h % 997 == 0,
        "license_code": LICENSES[h % len(LICENSES)],
        "xml_url": f"{url}.xml?md5={hashlib.md5(folder.encode()).hexdigest()}",
        "pdf_url": f"{url}.pdf?md5={h:032x}"[: len(url) + 41],
        "media_urls": [f"s3://pmc-oa-opendata/{folder}/fig{k}.jpg?md5={h:032x}" for k in (1, 2)],
        "text_url": f"{url}.txt?md5={h:032x}",
    }
    return json.dumps(meta).encode()


class Bucket(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, articles: int, latency_s: float):
        super().__init__(("127.0.0.1", 0), Handler)
        self.keys = sorted(f + "/" for f in folders(articles))
        self.latency_s = latency_s
        self.counts = {"list": 0, "get": 0}
        self.lock = threading.Lock()
        self.inventory = self._inventory()

    def _inventory(self) -> dict[str, bytes]:
        rows = "".join(
            f'"pmc-oa-opendata","metadata/{k[:-1]}.json","2026-01-08T11:47:59.000Z",'
            f'"{hashlib.md5(metadata_body(k[:-1])).hexdigest()}"\n'
            for k in self.keys
        )
        data = gzip.compress(rows.encode(), 6)
        key = f"{INVENTORY}/data/0f5c5e61.csv.gz"
        manifest = {
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, LastModifiedDate, ETag",
            "files": [
                {"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}
            ],
        }
        return {key: data, f"{INVENTORY}/{DATE}/manifest.json": json.dumps(manifest).encode()}

    def page(self, bucket: str, query: dict[str, str]) -> bytes:
        prefix = query.get("prefix", "")
        if prefix.startswith("inventory-reports/"):
            names = [f"{INVENTORY}/{DATE}/", f"{INVENTORY}/data/"] if bucket == "inv" else []
            page, more = names, False
        else:
            token = query.get("continuation-token")
            after = bytes.fromhex(token).decode() if token else query.get("start-after", "")
            start = bisect.bisect_right(self.keys, after)
            page, more = self.keys[start : start + 1000], start + 1000 < len(self.keys)
        items = "".join(f"<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>" for p in page)
        token = page[-1].encode().hex() if more else ""
        nxt = f"<NextContinuationToken>{token}</NextContinuationToken>"
        return (
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            + (nxt if more else "")
            + items
            + "</ListBucketResult>"
        ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Bucket

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        if bucket == "_stats":
            with srv.lock:
                body, srv.counts = json.dumps(srv.counts).encode(), {"list": 0, "get": 0}
            return self._reply(body)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        kind = "list" if query.get("list-type") == "2" else "get"
        with srv.lock:
            srv.counts[kind] += 1
        if kind == "list":
            return self._reply(srv.page(bucket, query))
        if bucket == "slow":
            time.sleep(srv.latency_s)
        if key in srv.inventory and bucket == "inv":
            return self._reply(srv.inventory[key])
        folder = key.split("/")[0]
        self._reply(metadata_body(folder) if key == f"{folder}/{folder}.json" else b"", 200)

    def _reply(self, body: bytes, status: int = 200) -> None:
        self.send_response(status if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(articles: int, latency_s: float, ports: mp.Queue) -> None:
    srv = Bucket(articles, latency_s)
    ports.put(srv.server_address[1])
    srv.serve_forever()


# ---------------------------------------------------------------------------- the phases


def client() -> HttpClient:
    return HttpClient(contact_email="bench@example.org", max_connections=3, timeout_s=60)


def phase(name: str, url: str, home: Path, sample: int) -> dict[str, float]:
    """Run one phase in this process; what it did and how long it took."""
    import psutil

    base_rss = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if name in ("list-cold", "list-warm"):
        store = ListingStore(home / "listing.sqlite")
        count = sum(1 for _ in cached_prefixes(client(), url + "plain/", store, "PMC"))
        store.close()
    elif name == "inventory":
        store = ListingStore(home / "inventory.sqlite")
        date = latest_inventory(client(), url + "inv/")
        store.replace(inventory_entries(client(), url + "inv/", date, home / "inv"), date)
        count = len(store)
        store.close()
    else:  # select-cold, select-warm, slow-3, slow-32
        bucket = "slow/" if name.startswith("slow") else "plain/"
        conns = int(name.split("-")[1]) if name.startswith("slow") else 32
        kept, skipped = select_pmc(
            client(), url + bucket, home / "raw", sample, metadata_connections=conns
        )
        count = len(kept) + sum(skipped.values())
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"count": count, "seconds": seconds, "peak": peak, "growth": peak - base_rss}


def run_phase(name: str, url: str, home: Path, sample: int) -> dict[str, float]:
    """`phase` in a fresh process, then the requests the bucket saw."""
    args = [sys.executable, __file__, "--phase", name, "--url", url, "--home", str(home)]
    out = subprocess.run([*args, "--sample", str(sample)], check=True, capture_output=True)
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    with urllib.request.urlopen(url + "_stats/") as r:
        result.update(json.loads(r.read()))
    return result


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.sqlite"))


# ---------------------------------------------------------------------------- report


def report(rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{'phase':<38}{'items':>11}{'s':>8}{'items/s':>10}{'peak MB':>9}{'+MB':>7}"
          f"{'lists':>7}{'GETs':>8}")  # fmt: skip
    for name, r in rows.items():
        print(
            f"{name:<38}{r['count']:>11,}{r['seconds']:>8.1f}{r['count'] / r['seconds']:>10,.0f}"
            f"{r['peak'] / 2**20:>9.0f}{r['growth'] / 2**20:>7.0f}{r['list']:>7,}{r['get']:>8,}"
        )


def extrapolate(rows: dict[str, dict[str, float]], args: argparse.Namespace, disk: float) -> None:
    """The real bucket from the per-item costs measured here and an assumed S3 round trip."""
    versions, articles = 8_000_000, 5_000_000
    cold, warm = rows["listing, cold"], rows["listing, from the store"]
    inv, sel = rows["inventory, cold"], rows["selection, cold (32 connections)"]
    sel_warm = rows["selection, from the store"]
    client_ms_page = 1000 * cold["seconds"] / max(cold["list"], 1)
    listing_h = versions / 1000 * (client_ms_page + args.s3_page_ms) / 3.6e6
    cpu_rate = sel["count"] / sel["seconds"]
    net_rate = 32 / (args.s3_get_ms / 1000)
    per_article = sel["growth"] / sel["count"]
    print(f"\nThe real bucket (~{versions / 1e6:.0f}M versions of ~{articles / 1e6:.0f}M articles),"
          f" assuming {args.s3_page_ms} ms a listing page and {args.s3_get_ms} ms a GET:")  # fmt: skip
    print(f"  listing by pages: {versions / 1000:,.0f} pages x ({client_ms_page:.1f} ms here + "
          f"{args.s3_page_ms} ms S3) = {listing_h:.2f} h; from the store "
          f"{versions / (warm['count'] / warm['seconds']) / 60:.1f} min")  # fmt: skip
    print(f"  inventory instead: load {versions / (inv['count'] / inv['seconds']) / 60:.1f} min "
          f"(+ the download of ~{versions * args.gz_bytes_per_row / 1e6:.0f} MB)")  # fmt: skip
    print(f"  metadata, cold: min({cpu_rate:,.0f}/s CPU here, {net_rate:,.0f}/s = 32 / "
          f"{args.s3_get_ms} ms) -> {articles / min(cpu_rate, net_rate) / 3600:.1f} h; "
          f"at 3 connections {articles / (3 / (args.s3_get_ms / 1000)) / 3600:.1f} h")  # fmt: skip
    print(f"  metadata, from the store: {articles / (sel_warm['count'] / sel_warm['seconds']) / 60:.0f}"
          f" min; memory ~{per_article:,.0f} B/article -> {per_article * articles / 2**30:.1f} GiB "
          f"for the selection's result; stores on disk ~{disk * articles / 2**30:.1f} GiB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--articles", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=20_000, help="articles a sampled selection reads")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--latency-sample", type=int, default=2_000)
    ap.add_argument("--s3-get-ms", type=float, default=30.0, help="assumed, for the extrapolation")
    ap.add_argument("--s3-page-ms", type=float, default=150.0, help="assumed, likewise")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url, Path(args.home), args.sample)))
        return

    ctx = mp.get_context("spawn")
    ports: mp.Queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(args.articles, args.latency_ms / 1000, ports))
    server.start()
    t0 = time.perf_counter()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=600)}/"
        print(f"bucket of {args.articles:,} articles ready in {time.perf_counter() - t0:.0f} s; "
              f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="mediswift-pmc-") as tmp:
            home = Path(tmp)
            rows = run_all(url, home, args)
            disk = size_of(home / "sel" / "raw") / rows["selection, cold (32 connections)"]["count"]
            with urllib.request.urlopen(url + f"inv/{INVENTORY}/{DATE}/manifest.json") as r:
                gz = json.loads(r.read())["files"][0]["size"]
            args.gz_bytes_per_row = gz / rows["inventory, cold"]["count"]
    finally:
        server.terminate()
        server.join(5)
    report(rows)
    extrapolate(rows, args, disk)
    print(
        f"\nload average at end: {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s"
    )


def run_all(url: str, home: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    n = args.latency_sample
    return {
        "listing, cold": run_phase("list-cold", url, home / "list", 0),
        "listing, from the store": run_phase("list-warm", url, home / "list", 0),
        "inventory, cold": run_phase("inventory", url, home / "list", 0),
        "selection, cold (32 connections)": run_phase("select-cold", url, home / "sel", args.sample),
        "selection, from the store": run_phase("select-warm", url, home / "sel", args.sample),
        f"selection, {args.latency_ms:.0f} ms/GET, 3 connections": run_phase("slow-3", url, home / "s3", n),
        f"selection, {args.latency_ms:.0f} ms/GET, 32 connections": run_phase("slow-32", url, home / "s32", n),
    }  # fmt: skip


if __name__ == "__main__":
    main()
