"""Download byte caps and TLS failures, over loopback HTTP(S).

An upstream (or whoever sits between us and it) could send an endless body, or announce a
size no disk holds; sources without an md5 used to accept either. A certificate that does not
verify used to be retried six times as if the network had hiccuped.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import urllib3

from mediswift.data.download import (
    HttpClient,
    PermanentError,
    TooLargeError,
    TransientError,
    fetch_file,
)
from mediswift.data.http import TLSError, classify_tls

CAP = 1 << 20
BLOCK = b"x" * (64 << 10)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sent: dict[str, int] = {}  # path -> body bytes written
        self.accepted = 0

    def get_request(self):  # count connections, TLS handshakes included
        self.accepted += 1
        return super().get_request()

    def handle_error(self, request, client_address) -> None:
        pass  # clients hang up on purpose here

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # a body without Content-Length ends when the socket does
    server: Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/small":
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self._send(b"y" * 1000)
        elif self.path == "/announced-huge":
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            self._send(BLOCK)  # then hangs up: a client that reads on would see a cut body
        elif self.path == "/endless":
            self.end_headers()
            while self._send(BLOCK):
                pass

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except OSError:
            return False
        self.server.sent[self.path] = self.server.sent.get(self.path, 0) + len(data)
        return self.server.sent[self.path] < 1 << 30  # a bound for the test itself


def _serve(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def http() -> Iterator[Server]:
    yield from _serve(Server())


def _client(sleeps: list[float]) -> HttpClient:
    return HttpClient(timeout_s=10, max_retries=3, sleep=sleeps.append, max_download_bytes=CAP)


def test_announced_size_over_cap_is_refused_before_reading(http: Server, tmp_path: Path) -> None:
    sleeps: list[float] = []
    dest = tmp_path / "raw" / "big.jsonl"
    with pytest.raises(TooLargeError, match=r"/announced-huge: 1099511627776 bytes announced"):
        fetch_file(_client(sleeps), f"{http.url}/announced-huge", dest)
    assert sleeps == []  # permanent: not retried
    assert not dest.exists() and not list(dest.parent.iterdir())  # no .part left
    assert http.accepted == 1


def test_endless_body_is_cut_at_the_cap(http: Server, tmp_path: Path) -> None:
    sleeps: list[float] = []
    dest = tmp_path / "raw" / "corpus.jsonl"
    with pytest.raises(TooLargeError, match=rf"/endless: more than {CAP} bytes"):
        fetch_file(_client(sleeps), f"{http.url}/endless", dest)  # no md5, as for corpora
    assert sleeps == []
    assert not dest.exists() and not list(dest.parent.iterdir())
    # The server may have written ahead into socket buffers, but not much more than the cap.
    assert http.sent["/endless"] < CAP + (16 << 20)


def test_cap_is_a_parameter_and_small_files_pass(http: Server, tmp_path: Path) -> None:
    sleeps: list[float] = []
    client = _client(sleeps)
    got = fetch_file(client, f"{http.url}/small", tmp_path / "small")
    assert got.bytes == 1000 and got.fetched
    with pytest.raises(TooLargeError):
        fetch_file(client, f"{http.url}/small", tmp_path / "small2", max_bytes=999)
    assert not (tmp_path / "small2").exists()


def test_local_source_over_cap_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "big.bin"
    src.parent.mkdir()
    src.write_bytes(b"z" * (CAP + 1))
    with pytest.raises(TooLargeError, match="bytes announced"):
        fetch_file(_client([]), str(src), tmp_path / "raw" / "big.bin")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture()
def https(tmp_path: Path) -> Iterator[Server]:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = Server()
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


def test_certificate_that_does_not_verify_is_not_retried(https: Server, tmp_path: Path) -> None:
    sleeps: list[float] = []
    with pytest.raises(TLSError, match="certificate verification failed") as caught:
        fetch_file(_client(sleeps), f"{https.url}/small", tmp_path / "small")
    assert isinstance(caught.value, PermanentError)
    assert sleeps == [] and https.accepted == 1  # one handshake, no retry


def _requests_ssl_error(inner: ssl.SSLError) -> requests.exceptions.SSLError:
    """The exception requests raises for a TLS failure: the ssl error nested two deep."""
    reason = urllib3.exceptions.SSLError(inner)
    return requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(None, "/", reason))


def test_tls_classification() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert isinstance(classify_tls("u", _requests_ssl_error(verify)), TLSError)
    cut = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert isinstance(classify_tls("u", _requests_ssl_error(cut)), TransientError)
    version = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert isinstance(classify_tls("u", _requests_ssl_error(version)), TLSError)


def test_unresolvable_host_fails_at_once_with_a_hint() -> None:
    import time

    from mediswift.data.http import HttpClient, PermanentError

    client = HttpClient(contact_email="t@example.org", timeout_s=5, max_retries=6, backoff_s=1)
    start = time.monotonic()
    with pytest.raises(PermanentError, match="cannot resolve host.*--mirror"):
        client.get_bytes("http://no-such-host.invalid/pubmed/")
    assert time.monotonic() - start < 30  # not six backed-off retries
