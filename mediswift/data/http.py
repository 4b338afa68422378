"""One client for every byte the download stage reads: http(s) URLs and local paths alike.

Why one client: the mirror can be a folder or a URL, so listing, streaming, resuming and
checksum code must not care which. `HttpClient.open(src, offset)` returns a `Stream` over
either; everything above it (resume, md5, rename) is shared.

Errors are classified once, here: `TransientError` (timeouts, connection resets, a body cut
short, 5xx, 408, 429) is worth retrying; `PermanentError` (404, other 4xx, a checksum that keeps
failing, an unsafe name, a TLS certificate that does not verify, a body over the byte cap) is
not. `retry()` retries transient faults with exponential backoff and full jitter, honouring
`Retry-After`; the orchestration layer retries the same class only.

Politeness: at most `max_connections` open connections per host in this process (a semaphore
per host shared by every client), and a User-Agent naming the tool and a contact address, as
NCBI asks of bulk downloaders.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3

log = logging.getLogger(__name__)
T = TypeVar("T")
CHUNK = 1 << 20
# Network reads are smaller: bytes read in a chunk that a dropped connection interrupts are lost
# (urllib3 raises before returning them), so a small chunk keeps a resume close to the cut.
NET_CHUNK = 64 << 10
MAX_RETRY_AFTER_S = 900.0
# The most bytes one download may bring (real files, PubMed baseline files the largest, are tens
# of MB): past it an endless or lying body is cut instead of filling the disk.
MAX_DOWNLOAD_BYTES = 8 << 30


def _version() -> str:
    # The installed distribution's version (the package's __init__ may not be on the path
    # when the package is installed in editable mode as a namespace).
    try:
        return importlib.metadata.version("mediswift")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


VERSION = _version()


class DownloadError(Exception):
    """Base class: something could not be fetched (the message names the file)."""


class TransientError(DownloadError):
    """A fault that may go away on retry (network, 5xx, 429); `retry_after` in seconds if told."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DownloadError):
    """A fault a retry cannot fix: never retried."""


class NotFoundError(PermanentError):
    """The source does not exist (HTTP 404/410, or a missing local file)."""


class ChecksumError(PermanentError):
    """The bytes do not match their published md5, even after a fresh download."""


class TooLargeError(PermanentError):
    """The source is larger than the download byte cap (announced, or found while reading)."""


class TLSError(PermanentError):
    """The server's TLS certificate does not verify (or TLS cannot be agreed): a retry sees
    the same certificate, so this is not retried."""


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def join(base: str, name: str) -> str:
    """`base` (a URL or folder, with or without a trailing slash) joined with `name`."""
    if is_url(base):
        return base.rstrip("/") + "/" + name.lstrip("/")
    return str(Path(base) / name)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either a number or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# One semaphore per (host, limit), shared by all clients of this process: Prefect runs tasks in
# threads, each with its own client, and the limit is about the server, not about one client.
_HOST_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_HOST_SLOTS_LOCK = threading.Lock()


def host_slots(host: str, limit: int) -> threading.BoundedSemaphore:
    with _HOST_SLOTS_LOCK:
        return _HOST_SLOTS.setdefault((host, limit), threading.BoundedSemaphore(limit))


@dataclass
class Stream:
    """An open source of bytes from `offset` on; `total` is the full size when known."""

    src: str
    offset: int
    total: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class HttpClient:
    contact_email: str = "mediswift-users@example.org"
    timeout_s: float = 60.0
    max_retries: int = 6
    max_connections: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    max_download_bytes: int = MAX_DOWNLOAD_BYTES
    sleep: Callable[[float], None] = time.sleep
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def user_agent(self) -> str:
        return f"mediswift/{VERSION} (mailto:{self.contact_email})"

    def _session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per thread.
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            s.headers["Accept-Encoding"] = "identity"  # byte ranges and md5s are of the file
        return s

    # -- opening sources ----------------------------------------------------------------------

    def open(self, src: str, offset: int = 0) -> Stream:
        """Open `src` from byte `offset`. For URLs `Stream.offset` is what the server granted:
        0 when it ignored the Range request (the caller must then start over)."""
        return self._open_url(src, offset) if is_url(src) else self._open_path(src, offset)

    def _open_path(self, src: str, offset: int) -> Stream:
        path = Path(src)
        if not path.is_file():
            raise NotFoundError(f"{src}: no such file")
        size = path.stat().st_size
        f = open(path, "rb")  # noqa: SIM115 (closed by Stream.close)
        f.seek(min(offset, size))

        def chunks() -> Iterator[bytes]:
            while block := f.read(CHUNK):
                yield block

        return Stream(src, min(offset, size), size, chunks(), f.close)

    def _open_url(self, src: str, offset: int) -> Stream:
        slot = host_slots(urlsplit(src).netloc, self.max_connections)
        slot.acquire()
        try:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                r = self._session().get(src, headers=headers, stream=True, timeout=self.timeout_s)
            except requests.exceptions.SSLError as e:
                raise classify_tls(src, e) from e
            except requests.RequestException as e:
                if any(isinstance(c, socket.gaierror) for c in _causes(e)):
                    # No DNS answer: on a closed network no retry helps; fail within seconds.
                    host = urlsplit(src).hostname
                    raise PermanentError(
                        f"{src}: cannot resolve host {host!r}: check the URL, or run offline "
                        "with --mirror (or MEDISWIFT_MIRROR)"
                    ) from e
                raise TransientError(f"{src}: {type(e).__name__}: {e}") from e
            if r.status_code == 416 and offset:
                # The partial file is already as long as the source: nothing left to read.
                r.close()
                return Stream(src, offset, offset, iter(()), slot.release)
            check_status(src, r)
            granted = 0
            if r.status_code == 206:
                granted = _content_range_start(src, r)
            length = r.headers.get("Content-Length")
            total = granted + int(length) if length and length.isdigit() else None
        except BaseException:
            slot.release()
            raise

        def chunks() -> Iterator[bytes]:
            # The bytes as sent (decode_content=False): a server that adds gzip
            # Content-Encoding must not change what we checksum or where a Range resumes.
            try:
                yield from r.raw.stream(NET_CHUNK, decode_content=False)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise TransientError(f"{src}: connection lost: {e}") from e

        def close() -> None:
            r.close()
            slot.release()

        return Stream(src, granted, total, chunks(), close)

    def get_bytes(self, src: str, limit: int = 64 << 20) -> bytes:
        """A small file (index page, listing, sidecar, metadata) in full, with retries."""

        def once() -> bytes:
            with self.open(src) as s:
                check_size(src, s.total, limit)
                buf = bytearray()
                for block in s.chunks:
                    buf += block
                    if len(buf) > limit:
                        raise TooLargeError(f"{src}: larger than {limit} bytes")
                if s.total is not None and len(buf) != s.total:
                    raise TransientError(f"{src}: got {len(buf)} of {s.total} bytes")
                return bytes(buf)

        return self.retry(once, src)

    # -- retries ------------------------------------------------------------------------------

    def retry(self, fn: Callable[[], T], what: str) -> T:
        """Call `fn`, retrying `TransientError` up to `max_retries` times with backoff."""
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except TransientError as e:
                if attempt == self.max_retries:
                    raise
                wait = self.backoff(attempt, e.retry_after)
                log.warning(
                    "%s (attempt %d/%d), retrying in %.2fs",
                    e,
                    attempt + 1,
                    self.max_retries + 1,
                    wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After is a floor, not a hint
        (capped at `MAX_RETRY_AFTER_S`, so a broken header cannot park a task for days)."""
        jittered = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))
        if retry_after is None:
            return jittered
        return max(jittered, min(retry_after, MAX_RETRY_AFTER_S))


def check_size(src: str, total: int | None, limit: int) -> None:
    """Refuse a source whose announced size (Content-Length) is over `limit`, before reading."""
    if total is not None and total > limit:
        raise TooLargeError(
            f"{src}: {total} bytes announced, over the download cap of {limit} bytes (not read)"
        )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: requests and urllib3 nest the ssl error in args and `reason`."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen or len(seen) > 32:
            continue
        seen.add(id(e))
        yield e
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo += [n for n in nested if isinstance(n, BaseException)]


# TLS faults a retry may cure: the connection was cut during the handshake.
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def classify_tls(src: str, exc: requests.exceptions.SSLError) -> DownloadError:
    """A TLS failure: permanent (certificate verification, no common protocol) unless the
    connection was merely cut during the handshake."""
    causes = list(_causes(exc))
    for e in causes:
        if isinstance(e, ssl.SSLCertVerificationError):
            why = getattr(e, "verify_message", None) or e
            return TLSError(
                f"{src}: TLS certificate verification failed ({why}); "
                "not retried: check the URL, the system clock and the CA bundle"
            )
    if any(isinstance(e, _TLS_TRANSIENT) for e in causes):
        return TransientError(f"{src}: TLS connection cut: {exc}")
    return TLSError(f"{src}: TLS failed: {exc}; not retried")


def check_status(src: str, r: requests.Response) -> None:
    """Raise the right error class for a non-success status."""
    code = r.status_code
    if code in (200, 206):
        return
    r.close()
    if code in (404, 410):
        raise NotFoundError(f"{src}: HTTP {code} (not found; not retried)")
    if code in (408, 429) or code >= 500:
        after = parse_retry_after(r.headers.get("Retry-After"))
        raise TransientError(f"{src}: HTTP {code} {r.reason}", retry_after=after)
    raise PermanentError(f"{src}: HTTP {code} {r.reason}")


def _content_range_start(src: str, r: requests.Response) -> int:
    # "bytes 100-199/200": the first byte actually sent.
    value = r.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        r.close()
        raise TransientError(f"{src}: 206 without a usable Content-Range ({value!r})") from None
