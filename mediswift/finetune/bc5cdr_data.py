"""BC5CDR chemical-induced disease (CID) relations, as BioGPT's RE-BC5CDR example builds them.

Input: the BioCreative V CDR corpus in PubTator format, one block per abstract, blocks separated
by a blank line:

    PMID|t|title
    PMID|a|abstract
    PMID<TAB>start<TAB>end<TAB>mention<TAB>Chemical|Disease<TAB>MeSH ids[<TAB>names]
    PMID<TAB>CID<TAB>chemical id<TAB>disease id

Offsets count characters of `title + " " + abstract`. A mention's ids are joined by "|" and
"-1" means none. A composite mention ("pulmonary and renal insufficiency") carries several ids,
and then usually a 7th column with one individual name per id ("pulmonary
insufficiency|renal insufficiency"); an empty 7th column means no individual names. 500
abstracts per split with 1038/1012/1066 CID lines (training/development/test).

BioGPT's `examples/RE-BC5CDR/rebuild_data.py` starts from JSON files it ships beside the corpus
(`raw/{train,valid,test}.json`: per PMID the title, abstract, CID relations and two
lower-cased name -> id maps), built by a converter it does not publish. Comparing those files
with the PubTator files gives the rules reproduced here:

- Name maps, per document and per entity type: every mention's lower-cased text maps to its id,
  in order of first appearance, and a later mention with the same text but another id takes the
  text over (so a text stands for one id only, the last one seen; ids of "-1" take part too).
  A composite mention contributes its individual names, each with its own id; a composite
  without individual names contributes nothing (BioGPT's files name 3 such mentions in a way no
  rule derives from the corpus, so they are left out here).
- The name of an id (`unify_ent2id(..., method='max')`): the longest text mapping to it; on a
  tie, the one seen first.
- Relations in the order of the CID lines (the script defines a sort by position in the text
  but never calls it). A relation whose chemical or disease has no name is dropped, as
  BioGPT's files drop the 3 of the development set (PMIDs 9022662, 1595783); the other 3 are
  the hand-named composites' (1 in training, PMID 3800626; 2 in test, PMID 9578276). Kept:
  1037/1009/1064 of 1038/1012/1066, each target equal to BioGPT's but those 2 documents' and
  one whitespace difference (below).
- An abstract is an example when at least one relation is kept: all 500 per split.
- Source: `title + " " + abstract` when the title ends with a non-word character (`\\W$`),
  `title + ". " + abstract` otherwise, lower-cased (BioGPT lower-cases all of it).
- Target: `the relation between {chemical} and {disease} exists; ... exists.`, triples
  `(chemical name, disease name, "cid")`. BioGPT writes a name as `str.lower()` leaves it; here
  names are also whitespace-normalised, which changes one name of these files (PMID 7504976's
  "n  omercazole", with two spaces), so that a target always parses back to its triples.

BioGPT scores BC5CDR by mapping generated names back to MeSH ids and running the official scorer
on (PMID, chemical id, disease id); `relations.micro_prf` on these names is the exact-match
counterpart, which counts a correct relation named by another synonym as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mediswift.data.quarantine import reading
from mediswift.finetune.relations import RelationExample, Template, Triple, normalise, render_target

CID = "cid"
TEMPLATE = Template("the relation between {head} and {tail} exists", relation=CID)
CHEMICAL, DISEASE = "Chemical", "Disease"

# Relative to BioGPT's data folder (the upstream base) and to its mirror folder `biogpt/`.
FILES = {
    "train": "BC5CDR/raw/CDR_Data/CDR.Corpus.v010516/CDR_TrainingSet.PubTator.txt",
    "dev": "BC5CDR/raw/CDR_Data/CDR.Corpus.v010516/CDR_DevelopmentSet.PubTator.txt",
    "test": "BC5CDR/raw/CDR_Data/CDR.Corpus.v010516/CDR_TestSet.PubTator.txt",
}

_TEXT_LINE = re.compile(r"^([^|\t]+)\|([ta])\|(.*)$")
_ENDS_NON_WORD = re.compile(r"\W$")


@dataclass(frozen=True)
class Mention:
    """One annotated span; `names` holds a composite mention's individual names, else ()."""

    start: int
    end: int
    text: str
    type: str
    ids: tuple[str, ...]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PubTatorDocument:
    """One abstract; `relations` are (type, chemical id, disease id) in file order."""

    pmid: str
    title: str
    abstract: str
    mentions: tuple[Mention, ...]
    relations: tuple[tuple[str, str, str], ...]

    @property
    def text(self) -> str:
        """The text the offsets count in."""
        return f"{self.title} {self.abstract}"


class _Builder:
    """The document being read: collects lines until a blank line (or a new title) ends it."""

    def __init__(self, pmid: str, title: str) -> None:
        self.pmid, self.title = pmid, title
        self.abstract: str | None = None
        self.mentions: list[Mention] = []
        self.relations: list[tuple[str, str, str]] = []

    def build(self, where: str) -> PubTatorDocument:
        if self.abstract is None:
            raise ValueError(f"{where}: document {self.pmid} has no abstract line")
        return PubTatorDocument(
            self.pmid, self.title, self.abstract, tuple(self.mentions), tuple(self.relations)
        )


def _mention(fields: list[str], text: str, where: str) -> Mention:
    _, start_s, end_s, mention, etype, ids_s = fields[:6]
    names_s = fields[6] if len(fields) == 7 else ""
    try:
        start, end = int(start_s), int(end_s)
    except ValueError:
        raise ValueError(f"{where}: offsets {start_s!r} {end_s!r} are not integers") from None
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"{where}: offsets {start}-{end} outside the {len(text)}-char text")
    if text[start:end] != mention:
        raise ValueError(f"{where}: text at {start}-{end} is {text[start:end]!r}, not {mention!r}")
    if not etype:
        raise ValueError(f"{where}: empty entity type")
    ids = tuple(ids_s.split("|"))
    if not all(ids):
        raise ValueError(f"{where}: empty id in {ids_s!r}")
    names = tuple(names_s.split("|")) if names_s else ()
    if names and len(names) != len(ids):
        raise ValueError(f"{where}: {len(names)} individual names for {len(ids)} ids")
    return Mention(start, end, mention, etype, ids, names)


def iter_pubtator(path: Path) -> Iterator[PubTatorDocument]:
    """The documents of a PubTator file, one at a time; a ValueError names file:line on bad input."""
    seen: set[str] = set()
    doc: _Builder | None = None
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            line = raw.rstrip("\r\n")
            if not line.strip():
                if doc is not None:
                    yield doc.build(where)
                    doc = None
                continue
            m = _TEXT_LINE.match(line)
            if m is not None:
                pmid, kind, body = m.groups()
                if kind == "t":
                    if doc is not None:  # no blank line between two documents
                        yield doc.build(where)
                    if pmid in seen:
                        raise ValueError(f"{where}: document {pmid} appears twice")
                    seen.add(pmid)
                    doc = _Builder(pmid, body)
                    continue
                if doc is None or doc.pmid != pmid or doc.abstract is not None:
                    raise ValueError(f"{where}: abstract of {pmid} does not follow its title")
                doc.abstract = body
                continue
            fields = line.split("\t")
            if doc is None or doc.abstract is None:
                raise ValueError(f"{where}: annotation line before a title and abstract")
            if len(fields) not in (4, 6, 7):
                raise ValueError(
                    f"{where}: expected a title/abstract line, a mention (6-7 tab-separated "
                    f"fields) or a relation (4 fields), got {len(fields)} field(s)"
                )
            if fields[0] != doc.pmid:
                raise ValueError(f"{where}: PMID {fields[0]!r} inside document {doc.pmid}")
            if len(fields) == 4:
                rtype, chemical, disease = fields[1:]
                if not rtype or rtype.isdigit():
                    raise ValueError(f"{where}: relation type {rtype!r} (a 4-field line)")
                if not (chemical and disease):
                    raise ValueError(f"{where}: {rtype} relation with an empty id")
                doc.relations.append((rtype, chemical, disease))
            else:
                doc.mentions.append(_mention(fields, f"{doc.title} {doc.abstract}", where))
    if doc is not None:
        yield doc.build(f"{path}:{n}")


def name_to_id(doc: PubTatorDocument, entity_type: str) -> dict[str, str]:
    """Lower-cased mention text -> id for one entity type, first-appearance order, last id wins."""
    names: dict[str, str] = {}
    for mention in doc.mentions:
        if mention.type != entity_type:
            continue
        if mention.names:
            pairs = zip(mention.names, mention.ids, strict=True)
        elif len(mention.ids) == 1:
            pairs = zip((mention.text,), mention.ids, strict=True)
        else:  # a composite without individual names: no text names one of its ids
            continue
        for name, id_ in pairs:
            names[normalise(name)] = id_
    return names


def id_to_name(doc: PubTatorDocument, entity_type: str) -> dict[str, str]:
    """Id -> its longest name in the document (the first seen on a tie)."""
    best: dict[str, str] = {}
    for name, id_ in name_to_id(doc, entity_type).items():
        if len(name) > len(best.get(id_, "")):
            best[id_] = name
    return best


def cid_triples(doc: PubTatorDocument) -> tuple[list[Triple], list[tuple[str, str]]]:
    """The named CID triples in file order, and the (chemical, disease) id pairs left unnamed."""
    chemicals, diseases = id_to_name(doc, CHEMICAL), id_to_name(doc, DISEASE)
    kept: list[Triple] = []
    unnamed: list[tuple[str, str]] = []
    for rtype, chemical, disease in doc.relations:
        if rtype.lower() != CID:
            continue
        if chemical in chemicals and disease in diseases:
            kept.append(Triple(chemicals[chemical], diseases[disease], CID))
        else:
            unnamed.append((chemical, disease))
    return kept, unnamed


def source_text(title: str, abstract: str) -> str:
    """BioGPT's source: title and abstract joined by " " (or ". " after a word char), lower-cased."""
    joiner = " " if _ENDS_NON_WORD.search(title) else ". "
    return (title + joiner + abstract).lower()


def to_example(doc: PubTatorDocument) -> RelationExample | None:
    """The document as an example, or None when none of its relations can be named."""
    triples, _ = cid_triples(doc)
    if not triples:
        return None
    target = render_target(triples, TEMPLATE)
    return RelationExample(doc.pmid, source_text(doc.title, doc.abstract), target, tuple(triples))


def load_split(path: Path) -> list[RelationExample]:
    """The examples of one PubTator file, in file order (bad content: a RawFileError naming the
    file)."""
    with reading(path):
        return [ex for doc in iter_pubtator(path) if (ex := to_example(doc)) is not None]


def bc5cdr_splits(train: Path, dev: Path, test: Path) -> dict[str, list[RelationExample]]:
    return {"train": load_split(train), "dev": load_split(dev), "test": load_split(test)}
