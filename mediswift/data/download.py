"""Resumable, md5-verified file fetching into the raw folder, and the download stage's API.

`fetch_file` is the one way a raw file comes to exist: bytes stream into a hidden `.part`
sibling, a dropped connection resumes it with an HTTP Range request, the whole file is checked
against its published md5, and only then is it renamed into place. A file already in place whose
md5 verifies is not fetched again. A checksum mismatch earns one fresh full download (the
partial file may have been corrupt from an earlier crash); a second mismatch is an error naming
the file.

The stage-level functions the Prefect tasks wrap live in `pubmed_files`, `pmc_files` and
`sources`; they are re-exported here so callers need one import.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mediswift.data.http import (
    ChecksumError,
    DownloadError,
    HttpClient,
    NotFoundError,
    PermanentError,
    TransientError,
)
from mediswift.settings import DownloadConfig

log = logging.getLogger(__name__)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "FetchResult",
    "HttpClient",
    "NotFoundError",
    "PermanentError",
    "TransientError",
    "client_for",
    "fetch_file",
    "md5_file",
]


def client_for(cfg: DownloadConfig) -> HttpClient:
    return HttpClient(
        contact_email=cfg.contact_email,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        max_connections=cfg.max_connections,
        backoff_s=cfg.backoff_s,
        backoff_max_s=cfg.backoff_max_s,
    )


@dataclass(frozen=True)
class FetchResult:
    path: Path
    md5: str
    bytes: int
    fetched: bool  # False when a verified copy was already in place


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch_file(client: HttpClient, src: str, dest: Path, md5: str | None = None) -> FetchResult:
    """Make `dest` a verified copy of `src` (a URL or a local path).

    With `md5=None` (sources that publish no checksum) a file already in place is trusted: it
    was renamed there only after a complete download.
    """
    if dest.is_file():
        digest = md5_file(dest)
        if md5 is None or digest == md5.lower():
            return FetchResult(dest, digest, dest.stat().st_size, fetched=False)
        log.warning("%s: md5 %s does not match %s, fetching it again", dest, digest, md5)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    digest = ""
    for fresh in (False, True):
        if fresh:
            log.warning("%s: md5 %s != expected %s, one fresh download", src, digest, md5)
            part.unlink(missing_ok=True)
        client.retry(lambda: _stream_into(client, src, part), src)
        digest = md5_file(part)
        if md5 is None or digest == md5.lower():
            size = part.stat().st_size
            os.replace(part, dest)
            return FetchResult(dest, digest, size, fetched=True)
    part.unlink(missing_ok=True)
    raise ChecksumError(
        f"{src}: md5 mismatch after a fresh download (got {digest}, expected {md5}); "
        "the upstream file or its checksum is bad"
    )


def _stream_into(client: HttpClient, src: str, part: Path) -> None:
    """Append the rest of `src` to `part`, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    with client.open(src, have) as stream:
        # A server may ignore Range (200) or grant a different start: write from what it sent.
        mode = "ab" if stream.offset == have and have else "wb"
        written = stream.offset if mode == "ab" else 0
        if mode == "wb" and stream.offset:
            part.unlink(missing_ok=True)  # start over cleanly on the next attempt
            raise TransientError(f"{src}: server resumed at {stream.offset}, expected {have}")
        with open(part, mode) as f:
            for block in stream.chunks:
                f.write(block)
                written += len(block)
            f.flush()
            os.fsync(f.fileno())
        if stream.total is not None and written != stream.total:
            raise TransientError(f"{src}: connection closed at {written} of {stream.total} bytes")
