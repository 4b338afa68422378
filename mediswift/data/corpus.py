"""Extra corpora: JSONL files (one object a line: `id`, `text`, optional `title`, `source`).

A record becomes a Document with `doc_id` = its `id` unchanged (so a `pmid:<n>` id meets the
PubMed record of that PMID in the filter's duplicate check), `pmid` filled in for such ids,
and `source` = `corpus:<name>`, the name the download manifest gives the file.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mediswift.data.shards import Document, write_sharded


class CorpusFormatError(ValueError):
    """A corpus line that is not a JSON object with a string `id` and `text`."""


def _pmid(doc_id: str) -> str | None:
    if doc_id.startswith("pmid:") and doc_id[5:].isdigit():
        return doc_id[5:]
    return None


def iter_corpus(path: Path | str, name: str) -> Iterator[Document]:
    """The documents of one JSONL corpus file (.jsonl or .jsonl.gz), in file order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusFormatError(f"{path}: line {lineno}: not JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise CorpusFormatError(f"{path}: line {lineno}: not a JSON object")
            doc_id, text = rec.get("id"), rec.get("text")
            if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str):
                raise CorpusFormatError(
                    f"{path}: line {lineno}: needs a string 'id' and a string 'text'"
                )
            title = rec.get("title")
            yield Document(
                doc_id=doc_id,
                source=f"corpus:{name}",
                pmid=_pmid(doc_id),
                title=" ".join(title.split()) if isinstance(title, str) else "",
                text=text.strip(),
            )


def parse_corpus_file(
    path: Path | str, name: str, out_dir: Path, rows_per_shard: int
) -> dict[str, Any]:
    """Parse one corpus file into document shards under `out_dir` (all or nothing)."""
    shards = write_sharded(iter_corpus(path, name), out_dir, rows_per_shard)
    return {"shards": shards, "counts": {"documents": sum(n for _, n in shards)}}
