"""Raw files that fail to load: an error that names them, and a place to move them aside.

Sources that publish no checksum (downstream task files, extra corpora) are trusted once they
are in `raw/`: a copy that arrived malformed would fail every later run, even after the mirror
or upstream is fixed. So their readers raise `RawFileError` (the file, and the line or item
where known), and the stage that read the file moves it to `<home>/quarantine/<its path under
home>` (`move_aside`, as the parse stage does with PubMed and PMC files): the next run finds
it gone and fetches it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUARANTINE_DIR = "quarantine"


class RawFileError(ValueError):
    """A raw file whose content cannot be loaded; the message starts with the file's path
    (`problem` may start with it already, as `<path>:<line>: ...` does)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        named = problem.startswith(str(path))
        super().__init__(problem if named else f"{path}: {problem}")

    def __reduce__(self) -> tuple[type[RawFileError], tuple[Path, str]]:
        # Process pools pickle a worker's exception: rebuild it from both fields.
        return (type(self), (self.path, self.problem))


def describe(e: BaseException) -> str:
    """A reading error in words, for a message that names the file: Python's own text for
    recursion suggests a fault of the program rather than bad input, and a decoding stream's
    byte offset counts from the block it was decoding, not from the start of the file."""
    if isinstance(e, RecursionError):
        return "nested too deeply to read (maximum recursion depth exceeded)"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{e.object[e.start]:02x})"
    text = " ".join(str(e).split())
    if isinstance(e, ValueError | OSError):
        return text
    return f"unexpected content ({type(e).__name__}: {text})"


# Bytes that are not UTF-8, as text read with errors="surrogateescape" keeps them.
_UNDECODED = re.compile("[\udc80-\udcff]")


def check_utf8(text: str) -> None:
    """Raise ValueError when `text` (read with errors="surrogateescape") holds bytes that are
    not UTF-8: so a reader can say on which line they are, which a decoding stream cannot."""
    if m := _UNDECODED.search(text):
        raise ValueError(f"not UTF-8 text (byte 0x{ord(m.group()) - 0xDC00:02x})")


# What a reader raises on content it did not expect: a malformed file, not a fault of the run.
CONTENT_ERRORS = (ValueError, RecursionError, KeyError, TypeError, IndexError, AttributeError)


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn any content error raised inside into a `RawFileError` naming `path`."""
    try:
        yield
    except RawFileError:
        raise
    except CONTENT_ERRORS as e:
        raise RawFileError(path, describe(e)) from e


def move_aside(home: Path, path: Path) -> Path | None:
    """Move `path` (a file under `home`) to `<home>/quarantine/<its path under home>`, replacing
    an earlier copy there; where it went, or None when it is not a file under home."""
    try:
        rel = path.resolve().relative_to(home.resolve())
    except ValueError:
        return None
    if not path.is_file():
        return None
    dest = home / QUARANTINE_DIR / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.replace(dest)
    return dest


def quarantined(home: Path, e: RawFileError) -> RawFileError:
    """`e`, after moving its file aside when it is a raw file of `home`: the error then says
    where the copy went and that the next run fetches the file again."""
    raw = home / "raw"
    if not e.path.resolve().is_relative_to(raw.resolve()):
        return e
    dest = move_aside(home, e.path)
    if dest is None:
        return e
    return RawFileError(
        e.path, f"{e.problem}; moved aside to {dest}, the next run fetches it again"
    )


def reopen_listing(home: Path, stage: str, rel: str) -> list[Path]:
    """Take back the "done" of every output of `stage` (`<home>/<stage>/<key>/manifest.json`)
    that lists the file `rel` (its path under home), so the next run makes the stage again:
    with the file moved aside, its unit fetches it again. Returns the manifests removed."""
    removed = []
    for manifest in sorted((home / stage).glob("*/manifest.json")):
        try:
            listed = f'"{rel}"' in manifest.read_text(errors="replace")
        except OSError:
            continue
        if listed:
            manifest.unlink(missing_ok=True)
            removed.append(manifest)
    return removed
