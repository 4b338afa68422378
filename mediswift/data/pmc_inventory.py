"""The S3 inventory the PMC bucket publishes of its metadata objects, and the latest version
of each article in a listing."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mediswift.artifacts import safe_child
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, PermanentError, join
from mediswift.data.listing import (
    Entry,
    list_prefixes,
)
from mediswift.data.pmc_files import FOLDER_RE
from mediswift.data.quarantine import describe

log = logging.getLogger(__name__)

INVENTORY = "inventory-reports/pmc-oa-opendata/metadata"
INVENTORY_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
INVENTORY_KEY = re.compile(r"^metadata/(?P<folder>PMC\d+\.\d+)\.json$")
# Far above the ~8M article versions: past it an inventory is refused, not loaded forever.
MAX_INVENTORY_ROWS = 100_000_000


def latest_versions(entries: Iterable[Entry], skipped: Counter[str]) -> Iterator[Entry]:
    """The latest version folder of each article. Versions of one article are adjacent in the
    sorted listing ('PMC12.1', 'PMC12.2' sort before 'PMC120.1'), so this stays lazy."""
    matched = (e for e in entries if FOLDER_RE.match(e[0]))
    for _, group in itertools.groupby(matched, key=lambda e: FOLDER_RE.match(e[0])["pmcid"]):  # type: ignore[index]
        versions = sorted(group, key=lambda e: int(FOLDER_RE.match(e[0])["version"]))  # type: ignore[index]
        if len(versions) > 1:
            skipped["older_version"] += len(versions) - 1
        yield versions[-1]


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
    manifest = json_object(src, client.get_bytes(src))
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


def json_object(src: str, body: bytes) -> dict[str, Any]:
    """The JSON object `body`; a PermanentError naming `src` for anything else (a body nested
    too deeply for the parser included: RecursionError is not a ValueError)."""
    try:
        meta = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise PermanentError(f"{src}: metadata is not valid JSON: {describe(e)}") from e
    if not isinstance(meta, dict):
        raise PermanentError(f"{src}: metadata is not a JSON object")
    return meta
