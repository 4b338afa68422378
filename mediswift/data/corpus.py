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

from mediswift.data.quarantine import RawFileError, check_utf8
from mediswift.data.shards import Document, write_sharded


class CorpusFormatError(RawFileError):
    """A corpus line that is not UTF-8 JSON of an object with a string `id` and `text`."""


def _pmid(doc_id: str) -> str | None:
    if doc_id.startswith("pmid:") and doc_id[5:].isdigit():
        return doc_id[5:]
    return None


def _record(line: str) -> dict[str, Any]:
    """One line's object; a ValueError says what is wrong with it."""
    check_utf8(line)
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from e
    except RecursionError as e:
        raise ValueError("not JSON (nested too deeply)") from e
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    doc_id, text = rec.get("id"), rec.get("text")
    if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str):
        raise ValueError("needs a string 'id' and a string 'text'")
    return rec


def iter_corpus(path: Path | str, name: str) -> Iterator[Document]:
    """The documents of one JSONL corpus file (.jsonl or .jsonl.gz), in file order; a bad line
    raises CorpusFormatError naming the file and the line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    # Undecodable bytes are kept (as surrogates) to be reported with their line number.
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = _record(line)
            except ValueError as e:
                raise CorpusFormatError(path, f"line {lineno}: {e}") from e
            doc_id, title = rec["id"], rec.get("title")
            yield Document(
                doc_id=doc_id,
                source=f"corpus:{name}",
                pmid=_pmid(doc_id),
                title=" ".join(title.split()) if isinstance(title, str) else "",
                text=rec["text"].strip(),
            )


def parse_corpus_file(
    path: Path | str, name: str, out_dir: Path, rows_per_shard: int
) -> dict[str, Any]:
    """Parse one corpus file into document shards under `out_dir` (all or nothing)."""
    shards = write_sharded(iter_corpus(path, name), out_dir, rows_per_shard)
    return {"shards": shards, "counts": {"documents": sum(n for _, n in shards)}}
