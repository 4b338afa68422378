"""Downloads through the real code path: the mirror served over loopback HTTP, with faults.

The server (`MirrorServer`) serves the mirror folder like the upstreams do: NCBI-style HTML
indexes for folders, S3 ListObjectsV2 for the `pmc/` bucket (paginated), Range requests on
files; and, per path, a queue of injected faults (a connection dropped mid-file, 503, 429 with
Retry-After, 404, corrupted bytes, a Range request answered with 200).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mirror_server import MirrorServer

from mediswift.data.download import (
    ChecksumError,
    HttpClient,
    NotFoundError,
    PermanentError,
    TransientError,
    fetch_file,
    md5_file,
)
from mediswift.data.listing import index_names, list_prefixes, parse_list_bucket
from mediswift.data.pmc_files import allows_commercial, fetch_pmc_batch
from mediswift.data.pmc_select import select_pmc
from mediswift.data.pubmed_files import PubmedFile, fetch_pubmed, list_pubmed
from mediswift.data.sources import corpus_name, fetch_corpus


@pytest.fixture
def server(mirror_dir: Path):
    srv = MirrorServer(mirror_dir)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class RecordingSleep:
    """Sleeps for real (briefly) and records what was asked, to check Retry-After is honoured."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, s: float) -> None:
        self.waits.append(s)
        time.sleep(min(s, 1.5))


def client(**kw) -> HttpClient:
    opts = {"backoff_s": 0.01, "backoff_max_s": 0.05, "max_retries": 4, "timeout_s": 10.0}
    return HttpClient(contact_email="tests@example.org", **{**opts, **kw})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- PubMed over HTTP, with faults ------------------------------------------------------------


def test_pubmed_over_http_with_faults(server: MirrorServer, mirror_dir: Path, tmp_path: Path):
    base = server.url + "pubmed/"
    b = "/pubmed/baseline/"
    server.faults[b + "pubmed26n0001.xml.gz"] = ["drop"]  # resumed with Range
    server.faults[b + "pubmed26n0002.xml.gz"] = ["503"]  # retried
    server.faults[b + "pubmed26n0003.xml.gz"] = ["429"]  # retried after Retry-After: 1
    sleep = RecordingSleep()
    c = client(sleep=sleep)
    files = list_pubmed(c, base, max_files=3, include_updates=True)
    assert [(f.name, f.kind) for f in files] == [
        ("pubmed26n0001.xml.gz", "baseline"),
        ("pubmed26n0002.xml.gz", "baseline"),
        ("pubmed26n0003.xml.gz", "baseline"),
        ("pubmed26n0005.xml.gz", "update"),
    ]
    raw = tmp_path / "raw"
    entries = [fetch_pubmed(c, raw, f) for f in files]
    for e, f in zip(entries, files, strict=True):
        src = mirror_dir / f.rel
        assert e["md5"] == md5(src) == md5(tmp_path / e["path"])
        assert e["bytes"] == src.stat().st_size
    # The dropped connection was resumed from where it stopped, not restarted.
    hits = server.hits(b + "pubmed26n0001.xml.gz")
    assert hits[0] == (None, 200)
    assert hits[1][1] == 206 and int(hits[1][0].removeprefix("bytes=").rstrip("-")) > 0
    assert [s for _, s in server.hits(b + "pubmed26n0002.xml.gz")] == [503, 200]
    assert [s for _, s in server.hits(b + "pubmed26n0003.xml.gz")] == [429, 200]
    assert max(sleep.waits) >= 1.0  # Retry-After honoured
    assert server.user_agents == {"mediswift/0.1.0 (mailto:tests@example.org)"}
    assert not list(raw.rglob(".*.part"))  # no leftovers

    # Already present and verified: only the (small) sidecars are read again.
    before = len(server.log)
    again = [fetch_pubmed(c, raw, f) for f in files]
    assert all(not e["fetched"] for e in again)
    assert all(p.endswith(".md5") for p, _, _ in server.log[before:])


def test_range_ignored_by_server_restarts(server: MirrorServer, mirror_dir: Path, tmp_path: Path):
    name = "pubmed/baseline/pubmed26n0002.xml.gz"
    dest = tmp_path / "raw" / name
    dest.parent.mkdir(parents=True)
    part = dest.with_name(f".{dest.name}.part")
    part.write_bytes(b"garbage from an earlier, different download")
    server.faults["/" + name] = ["ignore-range"]
    result = fetch_file(client(), server.url + name, dest, md5(mirror_dir / name))
    assert result.fetched and md5(dest) == md5(mirror_dir / name)
    assert server.hits("/" + name)[0][0] is not None  # it did ask for a Range...
    assert len(server.hits("/" + name)) == 1  # ...got 200, and restarted in the same reply


def test_bad_md5_gets_one_fresh_download_then_fails(server: MirrorServer, tmp_path: Path):
    name = "/pubmed/baseline/pubmed26n0003.xml.gz"
    server.always_corrupt.add(name)
    files = list_pubmed(client(), server.url + "pubmed/", max_files=3, include_updates=False)
    with pytest.raises(ChecksumError, match="pubmed26n0003.xml.gz"):
        fetch_pubmed(client(), tmp_path / "raw", files[2])
    assert [r for r, _ in server.hits(name)] == [None, None]  # two full downloads, no more
    assert not (tmp_path / "raw/pubmed/baseline/pubmed26n0003.xml.gz").exists()
    assert not list((tmp_path / "raw").rglob("*.part"))


def test_corrupt_once_is_repaired_by_the_fresh_download(server: MirrorServer, tmp_path: Path):
    name = "/pubmed/baseline/pubmed26n0004.xml.gz"
    server.faults[name] = ["corrupt"]
    files = list_pubmed(client(), server.url + "pubmed/", include_updates=False)
    entry = fetch_pubmed(client(), tmp_path / "raw", files[3])
    assert entry["fetched"] and len(server.hits(name)) == 2


def test_404_is_not_retried(server: MirrorServer, tmp_path: Path):
    sleep = RecordingSleep()
    url = server.url + "pubmed/baseline/pubmed26n0999.xml.gz"
    with pytest.raises(NotFoundError, match="pubmed26n0999.xml.gz.*404"):
        fetch_file(client(sleep=sleep), url, tmp_path / "x.xml.gz")
    assert len(server.hits("/pubmed/baseline/pubmed26n0999.xml.gz")) == 1 and not sleep.waits


def test_a_timeout_is_retried(server: MirrorServer, mirror_dir: Path, tmp_path: Path, caplog):
    name = "/pubmedqa/test_ground_truth.json"
    server.faults[name] = ["stall"]
    result = fetch_file(client(timeout_s=0.3), server.url + name.lstrip("/"), tmp_path / "t.json")
    assert result.md5 == md5(mirror_dir / name.lstrip("/"))
    assert "Read timed out" in caplog.text and "retrying" in caplog.text


def test_transient_errors_give_up_after_max_retries(server: MirrorServer, tmp_path: Path):
    name = "/hoc/dev.tsv"
    server.faults[name] = ["503"] * 3
    with pytest.raises(TransientError, match="503"):
        fetch_file(client(max_retries=2), server.url + name.lstrip("/"), tmp_path / "dev.tsv")
    assert len(server.hits(name)) == 3


def test_at_most_max_connections_per_host(mirror_dir: Path, tmp_path: Path):
    srv = MirrorServer(mirror_dir, delay_s=0.2)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        c = client(max_connections=2)
        names = [f"hoc/{n}.tsv" for n in ("train", "dev", "test")] + [
            "pubmedqa/test_ground_truth.json",
            "pubmed/baseline/pubmed26n0001.xml.gz.md5",
            "pubmed/baseline/pubmed26n0002.xml.gz.md5",
        ]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda n: fetch_file(c, srv.url + n, tmp_path / n), names))
        assert srv.max_inflight == 2
    finally:
        srv.shutdown()
        srv.server_close()


# -- the local-directory path -----------------------------------------------------------------


def test_local_directory_gives_the_same_files(mirror_dir: Path, tmp_path: Path):
    c = client()
    files = list_pubmed(c, str(mirror_dir / "pubmed"), max_files=2, include_updates=False)
    assert [f.name for f in files] == ["pubmed26n0001.xml.gz", "pubmed26n0002.xml.gz"]
    entries = [fetch_pubmed(c, tmp_path / "raw", f) for f in files]
    assert [e["md5"] for e in entries] == [md5(mirror_dir / f.rel) for f in files]
    assert [e["fetched"] for e in entries] == [True, True]
    assert not any(fetch_pubmed(c, tmp_path / "raw", f)["fetched"] for f in files)
    with pytest.raises(NotFoundError, match="no such directory"):
        list_pubmed(c, str(tmp_path / "nowhere"))


def test_local_partial_file_is_resumed(mirror_dir: Path, tmp_path: Path):
    src = mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz"
    dest = tmp_path / "pubmed26n0001.xml.gz"
    dest.with_name(f".{dest.name}.part").write_bytes(src.read_bytes()[:1000])
    result = fetch_file(client(), str(src), dest, md5(src))
    assert result.fetched and md5(dest) == md5(src)


# -- PMC: S3 listing, metadata, licences --------------------------------------------------------


def test_s3_listing_is_paginated_and_matches_the_folder(server: MirrorServer, mirror_dir: Path):
    got = list(list_prefixes(client(), server.url + "pmc/", "PMC"))
    assert got == sorted(p.name for p in (mirror_dir / "pmc").iterdir())
    pages = [p for p, _, _ in server.log if p == "/pmc/"]
    assert len(pages) == -(-len(got) // server.page_size) > 1
    assert got == list(list_prefixes(client(), str(mirror_dir / "pmc"), "PMC"))


def test_static_server_index_stands_in_for_s3(server: MirrorServer, mirror_dir: Path):
    server.s3 = False
    got = list(list_prefixes(client(), server.url + "pmc/", "PMC"))
    assert got == sorted(p.name for p in (mirror_dir / "pmc").iterdir())


def test_list_bucket_parser_expands_no_entities():
    body = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>false</IsTruncated>"
        b"<CommonPrefixes><Prefix>&e;</Prefix></CommonPrefixes></ListBucketResult>"
    )
    prefixes, token = parse_list_bucket("test", body)
    assert token is None and "root:" not in "".join(prefixes)


def test_pmc_over_http_equals_local(server: MirrorServer, mirror_dir: Path, tmp_path: Path):
    c = client()
    http, skipped_http = select_pmc(c, server.url + "pmc/", tmp_path / "a", max_articles=12)
    local, skipped_local = select_pmc(c, str(mirror_dir / "pmc"), tmp_path / "b", max_articles=12)
    assert http == local and skipped_http == skipped_local == {}
    assert [a.folder for a in http] == sorted(p.name for p in (mirror_dir / "pmc").iterdir())[:12]
    entries = fetch_pmc_batch(c, server.url + "pmc/", tmp_path / "a", http[:4])
    for e, a in zip(entries, http[:4], strict=True):
        assert e["md5"] == a.md5 == md5(tmp_path / "a" / e["path"].removeprefix("raw/"))
        meta = json.loads((tmp_path / "a" / e["metadata"].removeprefix("raw/")).read_text())
        assert meta["pmcid"] == e["pmcid"] and e["license"] == meta["license_code"]


def test_commercial_only(mirror_dir: Path, tmp_path: Path):
    for ok in ("CC0", "CC BY", "cc-by-sa", "CC BY-ND 4.0", "CC BY 3.0", "CC_BY"):
        assert allows_commercial(ok), ok
    for no in ("CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND 4.0", "unknown", "", None, "custom"):
        assert not allows_commercial(no), no
    metas = [json.loads(p.read_text()) for p in sorted((mirror_dir / "pmc").glob("*/*.json"))]
    commercial = [m for m in metas if allows_commercial(m["license_code"])]
    kept, skipped = select_pmc(client(), str(mirror_dir / "pmc"), tmp_path, commercial_only=True)
    assert [a.pmcid for a in kept] == [m["pmcid"] for m in commercial]
    assert {a.license for a in kept} <= {"CC BY", "CC0"} and len(kept) > 5
    assert skipped == {"non_commercial": len(metas) - len(commercial)}


def _bucket(mirror_dir: Path, root: Path, n: int = 4) -> list[str]:
    folders = sorted(p.name for p in (mirror_dir / "pmc").iterdir())[:n]
    for f in folders:
        shutil.copytree(mirror_dir / "pmc" / f, root / f)
    return folders


def _edit(root: Path, folder: str, **changes) -> None:
    path = root / folder / f"{folder}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_retracted_closed_and_older_versions_are_skipped(mirror_dir: Path, tmp_path: Path):
    bucket = tmp_path / "bucket"
    f = _bucket(mirror_dir, bucket)
    _edit(bucket, f[0], is_retracted=True)
    _edit(bucket, f[1], is_pmc_openaccess=False)
    # A second version of the third article: the latest one wins.
    pmcid = f[2].split(".")[0]
    v2 = bucket / f"{pmcid}.2"
    v2.mkdir()
    shutil.copy(bucket / f[2] / f"{f[2]}.xml", v2 / f"{pmcid}.2.xml")
    meta = json.loads((bucket / f[2] / f"{f[2]}.json").read_text())
    meta["xml_url"] = meta["xml_url"].replace(f[2], f"{pmcid}.2")
    (v2 / f"{pmcid}.2.json").write_text(json.dumps(meta))
    (bucket / "README.txt").write_text("not an article")
    kept, skipped = select_pmc(client(), str(bucket), tmp_path / "raw")
    assert [a.folder for a in kept] == [f"{pmcid}.2", f[3]]
    assert skipped == {"retracted": 1, "not_open_access": 1, "older_version": 1}
    assert kept == select_pmc(client(), str(bucket), tmp_path / "raw", max_articles=2)[0]
    assert len(select_pmc(client(), str(bucket), tmp_path / "raw", max_articles=1)[0]) == 1


# -- no file outside the raw folder, whatever a listing says -------------------------------------


def test_hostile_listings_cannot_escape_raw(server: MirrorServer, mirror_dir: Path, tmp_path: Path):
    page = (
        '<a href="../../evil/pubmed26n0009.xml.gz">x</a>'
        '<a href="/etc/pubmed26n0008.xml.gz">x</a>'
        '<a href="..%2Fpubmed26n0007.xml.gz">x</a>'
        '<a href="http://elsewhere.example/pubmed26n0006.xml.gz">x</a>'
        '<a href="pubmed26n0001.xml.gz">pubmed26n0001.xml.gz</a>'
    )
    assert index_names(page) == ["pubmed26n0001.xml.gz"]
    server.overrides["/pubmed/baseline/"] = page.encode()
    assert [
        f.name for f in list_pubmed(client(), server.url + "pubmed/", include_updates=False)
    ] == ["pubmed26n0001.xml.gz"]
    raw = tmp_path / "home" / "raw"
    with pytest.raises(PermanentError, match="refusing"):
        fetch_pubmed(client(), raw, PubmedFile("../../evil.xml.gz", "baseline", "x"))

    # An article whose metadata points its XML outside its folder is refused, by name.
    bucket = tmp_path / "bucket"
    f = _bucket(mirror_dir, bucket, 1)[0]
    _edit(bucket, f, xml_url=f"s3://pmc-oa-opendata/{f}/../../../../evil.xml?md5={'0' * 32}")
    kept, _ = select_pmc(client(), str(bucket), raw)
    with pytest.raises(PermanentError, match="evil.xml"):
        fetch_pmc_batch(client(), str(bucket), raw, kept)
    _edit(bucket, f, xml_url=f"s3://pmc-oa-opendata/PMC1.1/PMC1.1.xml?md5={'0' * 32}")
    with pytest.raises(PermanentError, match="outside the article's folder"):
        select_pmc(client(), str(bucket), raw)
    # A bucket listing with traversal prefixes yields nothing we would use.
    server.overrides["/pmc/"] = (
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>false</IsTruncated>"
        b"<CommonPrefixes><Prefix>../../PMC1.1/</Prefix></CommonPrefixes>"
        b"<CommonPrefixes><Prefix>PMC2.1/../../x/</Prefix></CommonPrefixes></ListBucketResult>"
    )
    assert select_pmc(client(), server.url + "pmc/", raw) == ([], {})
    with pytest.raises(PermanentError):
        corpus_name("https://example.org/..")
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and "raw" not in p.parts]
    assert all(p.is_relative_to(bucket) for p in outside)


# -- fine-tuning datasets and extra corpora -------------------------------------------------------


def test_pubmedqa_hoc_and_corpus_over_http(server: MirrorServer, mirror_dir: Path, tmp_path: Path):
    from mediswift.config import load_recipe
    from mediswift.finetune.sources import fetch_task_files

    raw = tmp_path / "raw"
    c = client()
    cfg = load_recipe("demo", mirror=server.url.rstrip("/"))
    qa = fetch_task_files(c, cfg.finetune.task("pubmedqa"), tmp_path, cfg.resolve)
    hoc = fetch_task_files(c, cfg.finetune.task("hoc"), tmp_path, cfg.resolve)
    assert qa["ori_pqal"] == "raw/pubmedqa/ori_pqal.json"
    assert md5(tmp_path / hoc["train"]) == md5(mirror_dir / "hoc/train.tsv")
    entry = fetch_corpus(c, server.url + "corpus/biomed_text.jsonl", None, raw)
    assert entry["name"] == "biomed_text" and entry["records"] == 8163
    assert md5_file(tmp_path / entry["path"]) == md5(mirror_dir / "corpus/biomed_text.jsonl")


def test_corpus_lookup_and_errors(mirror_dir: Path, tmp_path: Path, monkeypatch):
    c = client()
    raw = tmp_path / "raw"
    entry = fetch_corpus(c, "corpus/biomed_text.jsonl", str(mirror_dir), raw)
    assert entry["source"] == str(mirror_dir / "corpus/biomed_text.jsonl")
    # Not in the mirror: relative to the working directory.
    monkeypatch.chdir(tmp_path)
    Path("mine.jsonl").write_text('{"id": "a", "text": "Aspirin inhibits COX-1."}\n')
    entry = fetch_corpus(c, "mine.jsonl", str(mirror_dir), raw)
    assert entry["source"] == str(tmp_path / "mine.jsonl") and entry["records"] == 1
    with pytest.raises(NotFoundError, match="missing.jsonl"):
        fetch_corpus(c, "missing.jsonl", str(mirror_dir), raw)
    Path("bad.jsonl").write_text('{"id": "a", "text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(PermanentError, match="bad.jsonl: line 2"):
        fetch_corpus(c, str(tmp_path / "bad.jsonl"), None, raw)
    assert not (raw / "corpus/bad.jsonl").exists()


def test_retry_condition_only_for_transient_errors():
    from prefect.states import Failed

    from tasks.download import is_transient

    assert is_transient(None, None, Failed(data=TransientError("x: HTTP 503")))
    assert not is_transient(None, None, Failed(data=NotFoundError("x: HTTP 404")))
    assert not is_transient(None, None, Failed(data=ChecksumError("x: md5")))
    assert not is_transient(None, None, Failed(data=ValueError("bug")))
