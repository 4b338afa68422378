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

# Bytes one line may have (`parse.max_record_bytes`): what any stage holds of one document.
MAX_LINE_BYTES = 64 << 20


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


def iter_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, refusing one longer than `max_line_bytes` (its newline
    not counted) after reading at most that many bytes of it: a 500 MB line is never held."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lineno = 0
        while line := f.readline(max_line_bytes + 1):
            lineno += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                raise CorpusFormatError(
                    path,
                    f"line {lineno}: longer than {max_line_bytes} bytes (the cap is "
                    "parse.max_record_bytes)",
                )
            # Undecodable bytes are kept (as surrogates) to be reported with their line number.
            yield lineno, line.decode("utf-8", errors="surrogateescape")


def iter_corpus(
    path: Path | str, name: str, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Document]:
    """The documents of one JSONL corpus file (.jsonl or .jsonl.gz), in file order; a bad line
    (or one longer than `max_line_bytes`) raises CorpusFormatError naming the file and the
    line."""
    path = Path(path)
    for lineno, line in iter_lines(path, max_line_bytes):
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
    path: Path | str,
    name: str,
    out_dir: Path,
    rows_per_shard: int,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> dict[str, Any]:
    """Parse one corpus file into document shards under `out_dir` (all or nothing)."""
    shards = write_sharded(iter_corpus(path, name, max_line_bytes), out_dir, rows_per_shard)
    return {"shards": shards, "counts": {"documents": sum(n for _, n in shards)}}
