"""Resumable, md5-verified file fetching into the raw folder, and the download stage's API.

`fetch_file` is the one way a raw file comes to exist: bytes stream into a hidden `.part`
sibling, a dropped connection resumes it with an HTTP Range request, the whole file is checked
against its published md5, and only then is it renamed into place. No download may bring more
than the client's byte cap (`HttpClient.max_download_bytes`): a Content-Length over it is
refused before a byte is read, and a body that runs past it is cut and its `.part` removed. A file already in place whose
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

from mediswift import interrupt
from mediswift.data.http import (
    ChecksumError,
    DownloadError,
    HttpClient,
    NotFoundError,
    PermanentError,
    TooLargeError,
    TransientError,
    check_size,
)
from mediswift.sections import Connection

log = logging.getLogger(__name__)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "FetchResult",
    "HttpClient",
    "NotFoundError",
    "PermanentError",
    "TooLargeError",
    "TransientError",
    "client_for",
    "fetch_file",
    "md5_file",
]


def client_for(cfg: Connection) -> HttpClient:
    return HttpClient(
        contact_email=cfg.contact_email,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        max_connections=cfg.max_connections,
        backoff_s=cfg.backoff_s,
        backoff_max_s=cfg.backoff_max_s,
        max_download_bytes=cfg.max_download_bytes,
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


def fetch_file(
    client: HttpClient, src: str, dest: Path, md5: str | None = None, max_bytes: int | None = None
) -> FetchResult:
    """Make `dest` a verified copy of `src` (a URL or a local path), of at most `max_bytes`
    (default: the client's `max_download_bytes`).

    With `md5=None` (sources that publish no checksum) a file already in place is trusted: it
    was renamed there only after a complete download. Whatever reads it moves a copy whose
    content does not load aside (`mediswift.data.quarantine`), so that copy is fetched again.
    """
    cap = client.max_download_bytes if max_bytes is None else max_bytes
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
        client.retry(lambda: _stream_into(client, src, part, cap), src)
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


def _stream_into(client: HttpClient, src: str, part: Path, cap: int) -> None:
    """Append the rest of `src` to `part`, resuming from its current size, never past `cap`
    bytes in all (an over-cap source leaves no `.part` behind: it is not resumable)."""
    have = part.stat().st_size if part.exists() else 0
    try:
        _copy(client, src, part, have, cap)
    except TooLargeError:
        part.unlink(missing_ok=True)
        raise


def _copy(client: HttpClient, src: str, part: Path, have: int, cap: int) -> None:
    """One attempt: the bytes of `src` from `have` on, appended to (or replacing) `part`."""
    with client.open(src, have) as stream:
        check_size(src, stream.total, cap)
        # A server may ignore Range (200) or grant a different start: write from what it sent.
        mode = "ab" if stream.offset == have and have else "wb"
        written = stream.offset if mode == "ab" else 0
        if mode == "wb" and stream.offset:
            part.unlink(missing_ok=True)  # start over cleanly on the next attempt
            raise TransientError(f"{src}: server resumed at {stream.offset}, expected {have}")
        with open(part, mode) as f:
            for block in stream.chunks:
                interrupt.check()  # the .part file stays: the next run resumes it
                written += len(block)
                if written > cap:
                    raise TooLargeError(
                        f"{src}: more than {cap} bytes, the download cap; cut there (the source "
                        "does not end, or is larger than announced)"
                    )
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        if stream.total is not None and written != stream.total:
            raise TransientError(f"{src}: connection closed at {written} of {stream.total} bytes")
