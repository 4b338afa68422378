"""DDI-2013 drug-drug interactions, as BioGPT's RE-DDI example builds them.

Input: the JSON files BioGPT ships (`data/DDI/raw/{train,valid,test}.json`), one object per
document, keyed by its DDI id (`DDI-DrugBank.d73`, `DDI-MedLine.d18`):

    {"abstract": str, "pmid": str (the same id), "triples": [
        {"drug": str, "target": str, "interaction": "advise|effect|int|mechanism",
         "modify": false}, ...]}

664/50/191 documents with 3572/305/949 triples; `modify` is false throughout and unused.

Rules of BioGPT's `examples/RE-DDI/rebuild_data.py`, reproduced here:

- A document without triples is dropped (195 of training, 9 of validation, none of test), so
  there are 469/41/191 examples.
- Source: the abstract stripped, newlines turned into spaces, lower-cased.
- Target: `the interaction between {drug} and {target} is {interaction}; ... .`, every field
  lower-cased, the interaction type as the file spells it (advise, effect, int, mechanism);
  triples `(drug, target, interaction)`. A triple listed twice in a document is written twice,
  as BioGPT does (the set scored holds it once).
- Order: a stable sort on `source.find(drug)`. BioGPT searches the lower-cased source for the
  drug as the file spells it, so any drug with a capital letter is "not found" (-1) and comes
  first in file order, the rest by the position of their first occurrence. That is evidently
  not what was meant, but it is what BioGPT trained on, and the order only shapes the targets
  (the metric compares sets), so it is kept.

Names are also whitespace-normalised, which changes no name of these files. BioGPT scores DDI
with `hard_match_evaluation.py`, looser than `relations.micro_prf` (see that module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mediswift.data.quarantine import reading
from mediswift.finetune.relations import RelationExample, Template, Triple, render_target

TEMPLATE = Template("the interaction between {head} and {tail} is {relation}")
INTERACTION_TYPES = ("advise", "effect", "int", "mechanism")

# Relative to BioGPT's data folder (the upstream base) and to its mirror folder `biogpt/`.
FILES = {"train": "DDI/raw/train.json", "dev": "DDI/raw/valid.json", "test": "DDI/raw/test.json"}

_TRIPLE_FIELDS = ("drug", "target", "interaction")


def load_json(path: Path) -> dict[str, Any]:
    """The documents of one DDI file by id; a ValueError names the file (and line) when bad."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of documents, got {type(data).__name__}")
    return data


def _raw_triples(doc_id: str, doc: Any, where: str) -> list[dict[str, str]]:
    """The document's triples, checked: three non-empty strings and a known interaction type."""
    if not isinstance(doc, dict) or not isinstance(doc.get("abstract"), str):
        raise ValueError(f"{where}: document {doc_id} lacks a string 'abstract'")
    triples = doc.get("triples")
    if triples is None:
        return []
    if not isinstance(triples, list):
        raise ValueError(f"{where}: document {doc_id}: 'triples' is not a list")
    for i, triple in enumerate(triples):
        if not isinstance(triple, dict) or not all(
            isinstance(triple.get(k), str) and triple[k].strip() for k in _TRIPLE_FIELDS
        ):
            raise ValueError(
                f"{where}: document {doc_id}, triple {i}: needs non-empty strings "
                f"{', '.join(_TRIPLE_FIELDS)}"
            )
        if triple["interaction"].lower() not in INTERACTION_TYPES:
            raise ValueError(
                f"{where}: document {doc_id}, triple {i}: interaction "
                f"{triple['interaction']!r} is not one of {', '.join(INTERACTION_TYPES)}"
            )
    return triples


def source_text(abstract: str) -> str:
    """BioGPT's source: the abstract stripped, on one line, lower-cased."""
    return abstract.strip().replace("\n", " ").lower()


def to_example(doc_id: str, doc: Any, where: str = "DDI") -> RelationExample | None:
    """The document as an example, or None when it has no triples (BioGPT drops those)."""
    raw = _raw_triples(doc_id, doc, where)
    if not raw:
        return None
    source = source_text(doc["abstract"])
    # BioGPT's order, quirk included: the drug as spelled is looked up in the lower-cased text.
    ordered = sorted(raw, key=lambda t: source.find(t["drug"]))
    triples = tuple(Triple(t["drug"], t["target"], t["interaction"]) for t in ordered)
    return RelationExample(str(doc_id), source, render_target(triples, TEMPLATE), triples)


def load_split(path: Path) -> list[RelationExample]:
    """The examples of one DDI file, in file order (bad content: a RawFileError naming the
    file)."""
    out = []
    with reading(path):
        for doc_id, doc in load_json(path).items():
            example = to_example(doc_id, doc, str(path))
            if example is not None:
                out.append(example)
    return out


def ddi_splits(train: Path, dev: Path, test: Path) -> dict[str, list[RelationExample]]:
    return {"train": load_split(train), "dev": load_split(dev), "test": load_split(test)}
