"""A user's extra JSONL corpora (downstream tasks fetch their own files: see
`mediswift.finetune.sources`).

Corpora publish no checksums, so they are fetched whole (resumable) and a copy already in
place is kept. A corpus is named after its file (`biomed_text.jsonl` -> `biomed_text`) and is
checked to be JSONL with `id` and `text` on every line, so a wrong file fails here, by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mediswift.artifacts import safe_child
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient, NotFoundError, PermanentError, is_url, join


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


def check_jsonl(path: Path, src: str) -> int:
    """Count the records, failing on the first line that is not a JSON object with id/text."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise PermanentError(f"{src}: line {lineno} is not JSON: {e}") from e
            if not isinstance(rec, dict) or "id" not in rec or "text" not in rec:
                raise PermanentError(f"{src}: line {lineno} lacks 'id' or 'text'")
            n += 1
    return n


def fetch_corpus(client: HttpClient, spec: str, mirror: str | None, raw: Path) -> dict[str, Any]:
    """Fetch one extra corpus into `raw/corpus/<name>.jsonl`; its manifest entry."""
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
            n = check_jsonl(dest, src)
        except PermanentError:
            dest.unlink(missing_ok=True)  # a bad file must not count as fetched next time
            raise
        return {"path": f"raw/corpus/{name}.jsonl", "name": name, "source": src, "records": n}
    raise NotFoundError(f"extra corpus {spec!r} not found (looked in: {', '.join(tried)})")
