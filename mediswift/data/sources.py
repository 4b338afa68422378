"""A user's extra JSONL corpora (downstream tasks fetch their own files: see
`mediswift.finetune.sources`).

Corpora publish no checksums, so they are fetched whole (resumable) and a copy already in
place is kept. A corpus is named after its file (`biomed_text.jsonl` -> `biomed_text`) and is
checked as the parse stage reads it (UTF-8 JSONL, a string `id` and `text` on every line), so
a wrong file fails here, by name and line, and is moved aside to be fetched again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediswift.artifacts import safe_child
from mediswift.data.corpus import MAX_LINE_BYTES, CorpusFormatError, iter_corpus
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, NotFoundError, PermanentError, is_url, join
from mediswift.data.quarantine import move_aside


def corpus_candidates(spec: str, mirror: str | None) -> list[str]:
    """Where to look for an extra corpus: URLs and absolute paths as given; a relative path
    under the mirror root first, then relative to the current directory."""
    if is_url(spec) or Path(spec).is_absolute():
        return [spec]
    here = str(Path(spec).resolve())
    return [join(mirror, spec), here] if mirror else [here]


def corpus_name(spec: str) -> str:
    name = spec.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".jsonl", ".json", ".jl"):
        name = name.removesuffix(suffix)
    if not name or name in (".", ".."):
        raise PermanentError(f"extra corpus {spec!r}: cannot name it from its path")
    return name


def check_corpus(path: Path, name: str, max_line_bytes: int = MAX_LINE_BYTES) -> int:
    """Count the records, failing (CorpusFormatError, naming the file and line) on the first
    line the parse stage would refuse (a line over `max_line_bytes` included): so a bad file is
    found here, before anything uses it."""
    return sum(1 for _ in iter_corpus(path, name, max_line_bytes))


def fetch_corpus(
    client: HttpClient,
    spec: str,
    mirror: str | None,
    raw: Path,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> dict[str, Any]:
    """Fetch one extra corpus into `raw/corpus/<name>.jsonl`; its manifest entry. A copy that
    fails the check is moved aside (`<home>/quarantine/raw/corpus/`), so the next run fetches
    it again: a corpus publishes no checksum to tell a bad copy by."""
    name = corpus_name(spec)
    try:
        dest = safe_child(raw, f"corpus/{name}.jsonl")
    except ValueError as e:
        raise PermanentError(str(e)) from e
    tried = corpus_candidates(spec, mirror)
    for src in tried:
        try:
            fetch_file(client, src, dest)
        except NotFoundError:
            continue
        try:
            n = check_corpus(dest, name, max_line_bytes)
        except CorpusFormatError as e:
            aside = move_aside(raw.parent, dest)
            raise PermanentError(
                f"extra corpus {src}: {e.problem} (copy moved aside to {aside}; the next run "
                "fetches it again)"
            ) from e
        return {"path": f"raw/corpus/{name}.jsonl", "name": name, "source": src, "records": n}
    raise NotFoundError(f"extra corpus {spec!r} not found (looked in: {', '.join(tried)})")
