"""PMC Open Access articles from the PMC Cloud Service's per-article layout: what an article
is, and fetching the XML of a batch of selected articles.

The bucket (https://pmc-oa-opendata.s3.amazonaws.com/) holds one folder per article version,
`PMC<id>.<ver>/`, with `PMC<id>.<ver>.xml` (JATS) and `PMC<id>.<ver>.json` (metadata:
`is_pmc_openaccess`, `is_retracted`, `license_code`, `xml_url` = `s3://pmc-oa-opendata/<key>?md5=`).
Which articles to take is `mediswift.data.pmc_select`; the XML is fetched in batches
(`fetch_pmc_batch`), verified against the md5 in `xml_url`.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mediswift.artifacts import safe_child, tmp_path
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, PermanentError, join

log = logging.getLogger(__name__)

FOLDER_RE = re.compile(r"^(?P<pmcid>PMC\d+)\.(?P<version>\d+)$")
BUCKET = "pmc-oa-opendata"

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


def store_file(dest: Path, body: bytes) -> bool:
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
