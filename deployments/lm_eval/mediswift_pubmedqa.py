"""Local data for the `mediswift_pubmedqa` lm-evaluation-harness task (no download, ever).

The test set is PubMedQA's 500 PQA-L test questions: the PMIDs of `test_ground_truth.json`
looked up in `ori_pqal.json` (the two files the pipeline fetches into `<home>/raw/pubmedqa/`).
Where the files are, first found wins:
  1. `--metadata '{"pubmedqa": "<path>"}'` on the lm_eval command line;
  2. the `MEDISWIFT_PUBMEDQA` environment variable;
  3. `$MEDISWIFT_HOME/raw/pubmedqa` (default home: `.mediswift`).
The path is a folder holding those two files, or a JSONL file of items with `QUESTION`,
`CONTEXTS` (a list of strings) and `final_decision` (yes/no/maybe), one a line.

Self-contained on purpose: lm_eval imports this file from the task folder, with or without the
`mediswift` package installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "MEDISWIFT_PUBMEDQA"
PQAL_FILE = "ori_pqal.json"
TRUTH_FILE = "test_ground_truth.json"
ANSWERS = ("yes", "no", "maybe")


def data_path(given: str | None = None) -> Path:
    """The PubMedQA files to read: `given`, else the environment variable, else the home's."""
    if given:
        return Path(given).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    home = Path(os.environ.get("MEDISWIFT_HOME") or ".mediswift").expanduser()
    return home / "raw" / "pubmedqa"


def test_items(path: Path) -> list[dict[str, Any]]:
    """The test questions as rows `id`, `QUESTION`, `CONTEXTS`, `final_decision`."""
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif (path / PQAL_FILE).is_file() and (path / TRUTH_FILE).is_file():
        items = json.loads((path / PQAL_FILE).read_text(encoding="utf-8"))
        truth = json.loads((path / TRUTH_FILE).read_text(encoding="utf-8"))
        missing = sorted(set(truth) - set(items))
        if missing:
            raise ValueError(f"{path}: {len(missing)} test PMIDs are not in {PQAL_FILE}")
        # The ground truth's label, not the item's: it is what the official test scores against.
        rows = [{**items[pmid], "id": pmid, "final_decision": truth[pmid]} for pmid in truth]
    else:
        raise FileNotFoundError(
            f"no PubMedQA data at {path}: expected {PQAL_FILE} and {TRUTH_FILE} in a folder, or a "
            f'JSONL file (set {ENV_VAR} or --metadata \'{{"pubmedqa": "<path>"}}\')'
        )
    return [_row(r, i, path) for i, r in enumerate(rows)]


def _row(item: dict[str, Any], i: int, source: Path) -> dict[str, Any]:
    answer = str(item.get("final_decision", "")).strip().lower()
    if answer not in ANSWERS or not item.get("QUESTION"):
        raise ValueError(f"{source}: item {item.get('id', i)} has no question or answer {answer!r}")
    return {
        "id": str(item.get("id", i)),
        "QUESTION": item["QUESTION"],
        "CONTEXTS": list(item.get("CONTEXTS") or []),
        "final_decision": answer,
    }


def load(pubmedqa: str | None = None, **_: Any) -> Any:
    """lm_eval's `custom_dataset`: a DatasetDict with the `test` split. It is called with the
    task's metadata (and lm_eval's own keys, ignored here)."""
    import datasets

    rows = test_items(data_path(pubmedqa))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict[str, Any]) -> str:
    """lm-evaluation-harness' `pubmedqa` prompt: abstract, question, "Answer:"."""
    contexts = "\n".join(doc["CONTEXTS"])
    return f"Abstract: {contexts}\nQuestion: {doc['QUESTION']}\nAnswer:"
