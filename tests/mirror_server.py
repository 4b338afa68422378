"""The mirror served over loopback HTTP like the upstreams serve it, with injected faults.

NCBI-style HTML indexes for folders, S3 ListObjectsV2 for the `pmc/` bucket (paginated), Range
requests on files; and, per path, a queue of injected faults (a connection dropped mid-file,
503, 429 with Retry-After, 404, corrupted bytes, a Range request answered with 200).
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, page_size: int = 10, delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root, self.page_size, self.delay_s = root, page_size, delay_s
        self.faults: dict[str, list[str]] = defaultdict(list)  # path -> faults, used in order
        self.always_corrupt: set[str] = set()
        self.overrides: dict[str, bytes] = {}  # path -> body served instead of the file
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.user_agents: set[str] = set()
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.s3 = True  # answer ?list-type=2 like S3; False: like a static file server

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up early (the retry tests do) is not a server bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def hits(self, path: str) -> list[tuple[str | None, int]]:
        return [(r, s) for p, r, s in self.log if p == path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each small reply waits
    # for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True
    server: MirrorServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        try:
            self._get()
        finally:
            with srv.lock:
                srv.inflight -= 1

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.server.log.append((self.path_only, self.headers.get("Range"), status))
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _get(self) -> None:
        srv = self.server
        parts = urlsplit(self.path)
        self.path_only = parts.path
        srv.user_agents.add(self.headers.get("User-Agent", ""))
        if srv.delay_s:
            time.sleep(srv.delay_s)
        fault = srv.faults[parts.path].pop(0) if srv.faults[parts.path] else None
        if fault in ("503", "404"):
            return self._reply(int(fault), b"fault\n")
        if fault == "stall":  # answer later than the client's read timeout
            time.sleep(1.0)
        if fault == "429":
            return self._reply(429, b"slow down\n", {"Retry-After": "1"})
        if parts.path in srv.overrides:
            return self._reply(200, srv.overrides[parts.path])
        target = (srv.root / parts.path.lstrip("/")).resolve()
        if not target.is_relative_to(srv.root.resolve()) or not target.exists():
            return self._reply(404, b"not found\n")
        if target.is_dir():
            query = parse_qs(parts.query)
            if query.get("list-type") == ["2"] and srv.s3:
                return self._reply(200, self._list_bucket(target, query))
            return self._reply(200, self._index(target, parts.path))
        body = target.read_bytes()
        if fault == "corrupt" or parts.path in srv.always_corrupt:
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        start = 0
        rng = self.headers.get("Range")
        if rng and fault != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
        if fault == "drop":
            # Promise the whole file, send half of it, then cut the connection.
            srv.log.append((parts.path, rng, 200))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if start:
            return self._reply(
                206, body[start:], {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            )
        return self._reply(200, body)

    def _index(self, folder: Path, path: str) -> bytes:
        # The shape of NCBI's Apache index pages.
        rows = ['<a href="/pubmed/">Parent Directory</a>']
        for n in sorted(os.listdir(folder)):
            href = n + "/" if (folder / n).is_dir() else n
            rows.append(f'<a href="{href}">{href}</a>   2025-12-10 11:06  1.2M')
        return (
            f"<!DOCTYPE html><html><head><title>Index of {path}</title></head><body><h1>Index of {path}</h1>"
            '<pre>Name  Last modified  Size<hr><a href="?C=N;O=D">Name</a>\n'
            + "\n".join(rows)
            + "\n<hr></pre></body></html>\n"
        ).encode()

    def _list_bucket(self, folder: Path, query: dict[str, list[str]]) -> bytes:
        prefix = query.get("prefix", [""])[0]
        names = sorted(n + "/" for n in os.listdir(folder) if n.startswith(prefix))
        token = query.get("continuation-token", [""])[0]
        after = base64.b64decode(token).decode() if token else ""
        rest = [n for n in names if n > after]
        page, more = rest[: self.server.page_size], len(rest) > self.server.page_size
        items = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in page
        )
        nxt = base64.b64encode(page[-1].encode()).decode() if more else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>pmc-oa-opendata</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{self.server.page_size}</MaxKeys>"
            f"<Delimiter>/</Delimiter><IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            + (f"<ContinuationToken>{token}</ContinuationToken>" if token else "")
            + (f"<NextContinuationToken>{nxt}</NextContinuationToken>" if more else "")
            + items
            + "</ListBucketResult>"
        ).encode()
