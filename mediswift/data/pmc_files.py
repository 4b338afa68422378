"""PMC Open Access articles from the PMC Cloud Service's per-article layout.

The bucket (https://pmc-oa-opendata.s3.amazonaws.com/) holds one folder per article version,
`PMC<id>.<ver>/`, with `PMC<id>.<ver>.xml` (JATS) and `PMC<id>.<ver>.json` (metadata:
`is_pmc_openaccess`, `is_retracted`, `license_code`, `xml_url` = `s3://pmc-oa-opendata/<key>?md5=`).

Selection (`select_pmc`) walks the folders in the bucket's sorted order, keeps the latest version
of each article, reads its metadata, keeps open-access and drops retracted articles (and, when
asked, licences that do not allow commercial use), and stops after `max_articles`: the same
recipe picks the same articles every time. Kept metadata is written to the raw folder; the XML is
fetched later in batches (`fetch_pmc_batch`), verified against the md5 in `xml_url`.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mediswift.artifacts import safe_child, write_atomic
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, NotFoundError, PermanentError, join
from mediswift.data.listing import list_prefixes

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


def latest_versions(folders: Iterator[str], skipped: Counter[str]) -> Iterator[str]:
    """The latest version folder of each article. Versions of one article are adjacent in the
    sorted listing ('PMC12.1', 'PMC12.2' sort before 'PMC120.1'), so this stays lazy."""
    matched = (f for f in folders if FOLDER_RE.match(f))
    for _, group in itertools.groupby(matched, key=lambda f: FOLDER_RE.match(f)["pmcid"]):  # type: ignore[index]
        versions = sorted(group, key=lambda f: int(FOLDER_RE.match(f)["version"]))  # type: ignore[index]
        if len(versions) > 1:
            skipped["older_version"] += len(versions) - 1
        yield versions[-1]


def _read_metadata(client: HttpClient, base: str, folder: str) -> tuple[str, bytes | None]:
    src = join(base, f"{folder}/{folder}.json")
    try:
        return src, client.get_bytes(src)
    except NotFoundError:
        return src, None


def select_pmc(
    client: HttpClient,
    base: str,
    raw: Path,
    max_articles: int | None = None,
    commercial_only: bool = False,
) -> tuple[list[PmcArticle], dict[str, int]]:
    """Choose the articles to fetch (sorted order) and store their metadata under `raw/pmc/`."""
    skipped: Counter[str] = Counter()
    kept: list[PmcArticle] = []
    if max_articles == 0:
        return kept, {}
    folders = latest_versions(list_prefixes(client, base, "PMC"), skipped)
    window = 4 * client.max_connections  # metadata reads in flight, bounded by the host limit
    with ThreadPoolExecutor(client.max_connections) as pool:
        while batch := list(itertools.islice(folders, window)):
            for folder, (src, body) in zip(
                batch, pool.map(lambda f: _read_metadata(client, base, f), batch), strict=True
            ):
                if body is None:
                    log.warning("%s: no metadata, article skipped", src)
                    skipped["missing_metadata"] += 1
                    continue
                try:
                    meta = json.loads(body)
                except ValueError as e:
                    raise PermanentError(f"{src}: metadata is not valid JSON: {e}") from e
                if not isinstance(meta, dict):
                    raise PermanentError(f"{src}: metadata is not a JSON object")
                if meta.get("is_pmc_openaccess") is not True:
                    skipped["not_open_access"] += 1
                elif meta.get("is_retracted") is True:
                    skipped["retracted"] += 1
                elif commercial_only and not allows_commercial(meta.get("license_code")):
                    skipped["non_commercial"] += 1
                else:
                    article = article_from_metadata(src, folder, meta)
                    _store(raw, f"pmc/{article.metadata_key}", body)
                    kept.append(article)
                    if max_articles is not None and len(kept) >= max_articles:
                        return kept, dict(skipped)
    return kept, dict(skipped)


def _store(raw: Path, rel: str, body: bytes) -> None:
    try:
        dest = safe_child(raw, rel)
    except ValueError as e:
        raise PermanentError(str(e)) from e
    if not (dest.is_file() and dest.read_bytes() == body):
        write_atomic(dest, body)


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
