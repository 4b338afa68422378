"""PubMed baseline and update files: list, choose, fetch with their `.md5` sidecars.

NCBI publishes `pubmed/baseline/pubmedYYnNNNN.xml.gz` once a year and daily
`pubmed/updatefiles/pubmedYYnNNNN.xml.gz` after it, each with a `<name>.md5` sidecar reading
`MD5(<name>)= <hex>`. Files are taken in name order (the order NCBI means them to be applied):
the first `max_files` baseline files, then the update files.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mediswift.artifacts import safe_child
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, PermanentError, join
from mediswift.data.listing import list_index

FILE_RE = re.compile(r"^pubmed\d{2}n\d{4}\.xml\.gz$")
MD5_RE = re.compile(r"^MD5\s*\((?P<name>[^)]+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{32})\s*$")
FOLDERS = {"baseline": "baseline", "update": "updatefiles"}

Kind = Literal["baseline", "update"]


@dataclass(frozen=True)
class PubmedFile:
    name: str  # pubmed26n0001.xml.gz
    kind: Kind
    url: str  # where to fetch it (URL or local path)

    @property
    def rel(self) -> str:
        """Path under the raw folder, as upstream lays it out."""
        return f"pubmed/{FOLDERS[self.kind]}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_kind(client: HttpClient, base: str, kind: Kind) -> list[PubmedFile]:
    folder = join(base, FOLDERS[kind] + "/")
    names = sorted(n for n in list_index(client, folder) if FILE_RE.match(n))
    return [PubmedFile(n, kind, join(folder, n)) for n in names]


def list_pubmed(
    client: HttpClient,
    base: str,
    max_files: int | None = None,
    include_updates: bool = True,
    max_update_files: int | None = None,
) -> list[PubmedFile]:
    """The files to fetch: baseline files in order, then (optionally) update files in order."""
    files = list_kind(client, base, "baseline")[:max_files]
    if include_updates:
        files += list_kind(client, base, "update")[:max_update_files]
    return files


def parse_md5_sidecar(src: str, text: str, name: str) -> str:
    """The hex digest from `MD5(name)= hex`, checking it is about the file we expect."""
    m = MD5_RE.match(text.strip())
    if not m:
        raise PermanentError(f"{src}: not an md5 sidecar ('MD5(name)= hex'): {text[:80]!r}")
    if m["name"].strip() != name:
        raise PermanentError(f"{src}: sidecar is for {m['name']!r}, not {name!r}")
    return m["hex"].lower()


def fetch_pubmed(client: HttpClient, raw: Path, f: PubmedFile) -> dict[str, Any]:
    """Fetch one file (verified against its sidecar) into `raw`; returns its manifest entry."""
    if not FILE_RE.match(f.name):
        raise PermanentError(f"refusing PubMed file name {f.name!r}")
    sidecar = f.url + ".md5"
    md5 = parse_md5_sidecar(sidecar, client.get_bytes(sidecar).decode("ascii", "replace"), f.name)
    dest = safe_child(raw, f.rel)
    result = fetch_file(client, f.url, dest, md5)
    return {
        "path": f"raw/{f.rel}",
        "kind": f.kind,
        "md5": result.md5,
        "bytes": result.bytes,
        "fetched": result.fetched,
    }
