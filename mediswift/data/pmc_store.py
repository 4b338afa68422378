"""What earlier PMC selections read, kept for later ones: the listing and every metadata
body, one folder per bucket or mirror URL (`raw/pmc/.listing/<base hash>/`)."""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mediswift.data.listing import (
    Entry,
    ListingStore,
    connect,
    transaction,
)

log = logging.getLogger(__name__)

CACHE = ".listing"  # under raw/pmc/: the listing and metadata kept between selections


class MetadataStore:
    """Metadata bodies already read, by article folder, with the md5 of each body.

    Why the md5: S3's ETag of a small object is the md5 of its bytes, so a body whose md5
    equals the ETag the inventory lists now is the current one. With no ETag known (a plain
    listing names folders only) a body read before is taken as current. Bodies are stored
    zlib-compressed (~1 KB of JSON each, millions of them). Used from one thread."""

    BATCH = 1000  # bodies a transaction: few commits, little lost to a crash

    def __init__(self, path: Path):
        self.db = connect(path)
        self.pending: list[tuple[str, bytes]] = []
        with transaction(self.db):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS meta "
                "(folder TEXT PRIMARY KEY, md5 TEXT NOT NULL, body BLOB NOT NULL) WITHOUT ROWID"
            )

    def close(self) -> None:
        """Store what is pending, then close (also when the selection failed: what it read
        before the failure is not read again)."""
        try:
            self.add(self.pending)
        finally:
            self.db.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM meta").fetchone()[0]

    def lookup(self, entries: list[Entry]) -> dict[str, bytes]:
        """The stored bodies that are still current for these (folder, ETag) entries."""
        etags = dict(entries)
        marks = ",".join("?" * len(etags))
        rows = self.db.execute(
            f"SELECT folder, md5, body FROM meta WHERE folder IN ({marks})", list(etags)
        )
        return {f: zlib.decompress(b) for f, md5, b in rows if etags[f] in (None, md5)}

    def remember(self, folder: str, body: bytes) -> None:
        """Keep `body` (stored with the next batch, or at `close`)."""
        self.pending.append((folder, body))
        if len(self.pending) >= self.BATCH:
            self.add(self.pending)
            self.pending = []

    def forget(self, folder: str) -> None:
        self.pending = [(f, b) for f, b in self.pending if f != folder]
        with transaction(self.db):
            self.db.execute("DELETE FROM meta WHERE folder = ?", (folder,))

    def add(self, bodies: list[tuple[str, bytes]]) -> None:
        rows = [(f, hashlib.md5(b).hexdigest(), zlib.compress(b, 1)) for f, b in bodies]
        with transaction(self.db):
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?, ?)", rows)


def cache_dir(raw: Path, base: str) -> Path:
    """Where selections from `base` keep their listing and metadata (one folder per bucket or
    mirror URL, so two sources never mix)."""
    digest = hashlib.sha256(base.rstrip("/").encode()).hexdigest()[:16]
    return raw / "pmc" / CACHE / digest


@contextmanager
def open_stores(
    raw: Path, base: str, enabled: bool
) -> Iterator[tuple[ListingStore, MetadataStore] | None]:
    if not enabled:
        yield None
        return
    folder = cache_dir(raw, base)
    listing = ListingStore(folder / "listing.sqlite")
    try:
        meta = MetadataStore(folder / "metadata.sqlite")
        try:
            yield listing, meta
        finally:
            meta.close()
    finally:
        listing.close()
