"""End-to-end relation extraction as text generation: triples, target sentences, micro P/R/F1.

BioGPT (Luo et al., 2022) casts relation extraction (BC5CDR, DDI, KD-DTI) as generation: the
source is the document, the target one clause per relation, joined by "; " and closed by ".",
e.g. for DDI

    the interaction between aspirin and warfarin is effect; the interaction between ... is advise.

A `Template` describes one clause with `{head}`, `{tail}` and optionally `{relation}` slots; a
template without a `{relation}` slot stands for a fixed relation (BC5CDR's "... exists" is
always a chemical-induced disease). `render_target` writes a list of triples into a sentence and
`parse_target` reads a generated sentence back, the way BioGPT's `postprocess.py` scripts do:
strip one final ".", split into clauses on ";", match each clause against the template and keep
the clauses that match. Garbage never raises: it yields what parses, an empty set when nothing
does. Two departures, both for robustness: a clause may be preceded by anything (BioGPT strips
a short list of known lead-ins such as "in conclusion ," or the learned prompt tokens before an
anchored match), and a clause that splits several ways (a name containing " and ") is read with
the shortest head, or, given the source document, with the first split whose names both occur
in it (BioGPT's greedy groups take the longest head, which misreads most such gold clauses).

Every `Triple` is normalised when built (lower-cased, whitespace collapsed, stripped): BioGPT
lower-cases both gold and predictions, and a generated sentence passes through detokenisation,
whose spacing should not decide a match. `micro_prf` then counts exact matches per document and
sums over documents (micro average). BioGPT's own scorers differ per task and are not
reproduced here: BC5CDR maps predicted names to MeSH ids and runs the official BioCreative
scorer on (PMID, chemical id, disease id); DDI's `hard_match_evaluation.py` additionally drops
every non-alphanumeric character, rewrites a final digit as a roman numeral, tries the name
with and without a trailing "(abbreviation)", and pools triples into one set across documents.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

CLAUSE_JOINER = "; "
# Split generated text on any ";" (BioGPT's BC5CDR script splits on ";", its DDI script on
# "; "); the clauses are stripped afterwards, so both spellings parse.
_CLAUSE_SPLIT = re.compile(r"\s*;\s*")
_SLOTS = ("head", "tail", "relation")
_SLOT = re.compile(r"\{(head|tail|relation)\}")
# Readings of one clause tried at most: garbage with many " and " must not blow up.
_MAX_READINGS = 1000


def normalise(text: str) -> str:
    """Lower-case, collapse every run of whitespace to one space, strip the ends."""
    return " ".join(text.lower().split())


@dataclass(frozen=True, order=True)
class Triple:
    """One relation: `head` and `tail` entity names and the `relation` type, all normalised."""

    head: str
    tail: str
    relation: str

    def __post_init__(self) -> None:
        # Normalise on construction so that two triples are equal exactly when they match.
        for name in _SLOTS:
            object.__setattr__(self, name, normalise(getattr(self, name)))


@dataclass(frozen=True)
class RelationExample:
    """One document: `source` text, `target` sentence, and its triples in target order.

    `triples` keeps the target's order and any repeated clause; `gold` is the set scored.
    """

    id: str
    source: str
    target: str
    triples: tuple[Triple, ...]

    @property
    def gold(self) -> frozenset[Triple]:
        return frozenset(self.triples)


@dataclass(frozen=True)
class Template:
    """One clause of a target sentence, with `{head}`, `{tail}` and optional `{relation}`.

    `relation` is the fixed relation type of a template without a `{relation}` slot; rendering
    such a template only accepts triples of that type.
    """

    clause: str
    relation: str | None = None

    def __post_init__(self) -> None:
        slots = _SLOT.findall(self.clause)
        for name in ("head", "tail"):
            if slots.count(name) != 1:
                raise ValueError(f"template {self.clause!r} needs exactly one {{{name}}}")
        if slots.count("relation") > 1:
            raise ValueError(f"template {self.clause!r} has more than one {{relation}}")
        if any(not literal for literal in _SLOT.split(normalise(self.clause))[1:-1]):
            raise ValueError(f"template {self.clause!r}: two slots need a literal between them")
        has_slot = "relation" in slots
        if has_slot == (self.relation is not None):
            raise ValueError(
                f"template {self.clause!r}: give a fixed relation exactly when there is no "
                "{relation} slot"
            )
        if self.relation is not None:
            object.__setattr__(self, "relation", normalise(self.relation))

    def render(self, triple: Triple) -> str:
        if self.relation is not None and triple.relation != self.relation:
            raise ValueError(
                f"template {self.clause!r} only renders relation {self.relation!r}, "
                f"not {triple.relation!r}"
            )
        return self.clause.format(head=triple.head, tail=triple.tail, relation=triple.relation)

    @cached_property
    def parts(self) -> tuple[str, ...]:
        """The normalised clause as (literal, slot, literal, slot, ..., literal)."""
        return tuple(_SLOT.split(normalise(self.clause)))

    def readings(self, clause: str) -> Iterator[Triple]:
        """Every way to read a (normalised) clause as this template, shortest head first.

        The template may start anywhere in the clause (a lead-in is skipped) and text after its
        final literal is ignored, as BioGPT's unanchored `re.match` ignores it. A slot ends at
        any occurrence of the literal that follows it, so a name containing that literal
        (" and ") gives several readings.
        """
        lead = self.parts[0]
        start = clause.find(lead)
        if start < 0:
            return
        fillings = _fill(clause, start + len(lead), self.parts[1:], {})
        for slots in itertools.islice(fillings, _MAX_READINGS):
            triple = Triple(
                slots["head"], slots["tail"], slots.get("relation", self.relation) or ""
            )
            if triple.head and triple.tail and triple.relation:
                yield triple

    def parse_clause(self, clause: str, source: str | None = None) -> Triple | None:
        """The triple in one (normalised) clause, or None when the clause does not match.

        Of several readings, the first whose head and tail both occur in `source` (normalised)
        wins, else the first: the one with the shortest head. BioGPT's scripts take the longest
        head (a greedy `(.*)`), which splits every disease name containing " and " (22 clauses
        in 19 BC5CDR targets) where the shortest head splits only the one chemical name
        containing it (1 target); the source settles that one too, names being copied from the
        text.
        """
        readings = self.readings(clause)
        first = next(readings, None)
        if first is None or source is None:
            return first
        text = normalise(source)
        for triple in itertools.chain((first,), readings):
            if triple.head in text and triple.tail in text:
                return triple
        return first


def _fill(
    text: str, pos: int, parts: Sequence[str], done: dict[str, str]
) -> Iterator[dict[str, str]]:
    """Fill the slots of `parts` (slot, literal, slot, literal, ...) from `text[pos:]`."""
    slot, literal, rest = parts[0], parts[1], parts[2:]
    if not literal:  # the clause ends with this slot: it takes the rest
        yield {**done, slot: text[pos:]}
        return
    end = text.find(literal, pos + 1)
    while end >= 0:
        filled = {**done, slot: text[pos:end]}
        if rest:
            yield from _fill(text, end + len(literal), rest, filled)
        else:
            yield filled
        end = text.find(literal, end + 1)


def render_target(triples: Sequence[Triple], template: Template) -> str:
    """The target sentence: one clause per triple, in the given order, "; "-joined, closed by "."."""
    if not triples:
        # BioGPT drops documents without relations instead of inventing an empty target.
        raise ValueError("a target sentence needs at least one triple")
    return CLAUSE_JOINER.join(template.render(t) for t in triples) + "."


def parse_target(text: str | None, template: Template, source: str | None = None) -> set[Triple]:
    """Every triple that can be read from a generated sentence; an empty set when none can.

    `source`, the document the sentence was generated from, only picks among the readings of
    an ambiguous clause (see `Template.parse_clause`).
    """
    if not text:
        return set()
    text = normalise(text)
    # Only one final "." closes the sentence; an entity name may itself end with a ".".
    if text.endswith("."):
        text = text[:-1]
    triples = set()
    for clause in _CLAUSE_SPLIT.split(text):
        triple = template.parse_clause(clause, source)
        if triple is not None:
            triples.add(triple)
    return triples


def as_triple(item: Triple | tuple[str, str, str]) -> Triple:
    """A Triple from a Triple or a plain (head, tail, relation) tuple."""
    return item if isinstance(item, Triple) else Triple(*item)


def micro_prf(
    preds: Sequence[Iterable[Triple] | None], golds: Sequence[Iterable[Triple]]
) -> tuple[float, float, float]:
    """Micro precision, recall and F1 of predicted against gold triples, over all documents.

    Per document the predictions and golds are sets (a repeated triple counts once, and plain
    (head, tail, relation) tuples are normalised like Triples); a None prediction (nothing
    parseable) counts as predicting nothing. True positives, predictions and golds are summed
    over documents; a ratio with nothing to count is 0.
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold documents")
    tp = n_pred = n_gold = 0
    for pred, gold in zip(preds, golds, strict=True):
        ps = {as_triple(t) for t in pred or ()}
        gs = {as_triple(t) for t in gold}
        tp += len(ps & gs)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
