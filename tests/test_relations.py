"""Relation extraction as generation: triples, targets, micro P/R/F1, BC5CDR and DDI data."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mediswift.finetune import bc5cdr_data, ddi_data
from mediswift.finetune.relations import (
    Template,
    Triple,
    micro_prf,
    parse_target,
    render_target,
)

CDR = bc5cdr_data.TEMPLATE
DDI = ddi_data.TEMPLATE
A, B, C, D = (Triple(f"drug {x}", f"disease {x}", "cid") for x in "abcd")
X, Y = Triple("x", "y", "cid"), Triple("y", "x", "cid")


# --- triples and templates ---------------------------------------------------------------


def test_triples_are_normalised_on_construction():
    assert Triple("  Alpha-MethylDopa ", "hypo\ttensive\n effect", "CID") == Triple(
        "alpha-methyldopa", "hypo tensive effect", "cid"
    )


def test_render_joins_clauses_and_closes_with_a_period():
    triples = [Triple("naloxone", "hypotension", "cid"), Triple("clonidine", "bradycardia", "cid")]
    assert render_target(triples, CDR) == (
        "the relation between naloxone and hypotension exists; "
        "the relation between clonidine and bradycardia exists."
    )
    ddi = [Triple("aspirin", "warfarin", "effect")]
    assert render_target(ddi, DDI) == "the interaction between aspirin and warfarin is effect."


def test_render_refuses_no_triples_and_a_foreign_relation():
    with pytest.raises(ValueError, match="at least one"):
        render_target([], CDR)
    with pytest.raises(ValueError, match="only renders relation 'cid'"):
        render_target([Triple("a", "b", "effect")], CDR)


@pytest.mark.parametrize(
    ("clause", "relation", "message"),
    [
        ("between {head} and {head} and {tail}", "cid", "exactly one {head}"),
        ("{head} exists", "cid", "exactly one {tail}"),
        ("{head} and {tail} is {relation} or {relation}", None, "more than one"),
        ("{head} and {tail} is {relation}", "cid", "fixed relation exactly when"),
        ("{head} and {tail} exists", None, "fixed relation exactly when"),
        ("{head} and {tail}{relation}", None, "literal between them"),
    ],
)
def test_bad_templates_are_refused(clause: str, relation: str | None, message: str):
    with pytest.raises(ValueError, match=message):
        Template(clause, relation)


def test_parse_reads_what_render_writes():
    triples = [Triple("a", "b", "effect"), Triple("c", "d", "int"), Triple("e f", "g", "advise")]
    assert parse_target(render_target(triples, DDI), DDI) == set(triples)


def test_parse_is_robust_to_spacing_case_and_lead_ins():
    text = (
        "learned1 learned2 in conclusion , The Relation between  Naloxone and Hypotension "
        "exists ;the relation between clonidine and bradycardia exists ."
    )
    assert parse_target(text, CDR) == {
        Triple("naloxone", "hypotension", "cid"),
        Triple("clonidine", "bradycardia", "cid"),
    }


def test_parse_keeps_the_clauses_that_match_and_drops_garbage():
    text = (
        "the interaction between a and b is effect; the interaction between c and; "
        "banana; the interaction between e and f is; the interaction between g and h is int"
    )
    assert parse_target(text, DDI) == {Triple("a", "b", "effect"), Triple("g", "h", "int")}


@pytest.mark.parametrize(
    "text", [None, "", ".", ";;;", "the relation between exists", "random words . ; ."]
)
def test_parse_of_garbage_is_empty(text: str | None):
    assert parse_target(text, CDR) == set()


def test_parse_strips_only_one_final_period():
    assert parse_target("the interaction between vit. and b inc. is effect.", DDI) == {
        Triple("vit.", "b inc.", "effect")
    }
    assert parse_target("the relation between a and b. exists.", CDR) == {Triple("a", "b.", "cid")}
    treats = Template("{head} treats {tail}", relation="treats")
    assert parse_target("x treats vit..", treats) == {Triple("x", "vit.", "treats")}


def test_text_after_the_final_literal_is_ignored():
    assert parse_target("the relation between a and b exists in rats.", CDR) == {
        Triple("a", "b", "cid")
    }


def test_an_ambiguous_clause_takes_the_shortest_head_unless_the_source_settles_it():
    text = "the relation between amoxicillin and clavulanic acid and jaundice exists."
    shortest = Triple("amoxicillin", "clavulanic acid and jaundice", "cid")
    assert parse_target(text, CDR) == {shortest}
    source = "Jaundice after a combination of amoxicillin and clavulanic acid."
    assert parse_target(text, CDR, source) == {
        Triple("amoxicillin and clavulanic acid", "jaundice", "cid")
    }
    # A source in which no reading's names both occur changes nothing.
    assert parse_target(text, CDR, "unrelated text") == {shortest}


def test_pathological_garbage_parses_quickly():
    text = "the relation between " + " and " * 3000 + "x exists " * 3000
    start = time.perf_counter()
    parse_target(text, CDR, "a source")
    assert time.perf_counter() - start < 5


# --- micro P/R/F1 ------------------------------------------------------------------------


def test_perfect_prediction():
    assert micro_prf([{A, B}, {C}], [{A, B}, {C}]) == (1.0, 1.0, 1.0)


def test_empty_and_unparseable_predictions_score_zero():
    assert micro_prf([set(), None], [{A}, {B, C}]) == (0.0, 0.0, 0.0)


def test_partial_overlap_in_one_document():
    # tp 2 of 3 predicted and 4 gold: P 2/3, R 1/2, F1 2PR/(P+R) = 4/7.
    p, r, f = micro_prf([{A, B, X}], [{A, B, C, D}])
    assert (p, r, f) == pytest.approx((2 / 3, 1 / 2, 4 / 7))


def test_micro_average_sums_counts_over_documents():
    # doc 1: tp 1 of 1/1; doc 2: tp 0 of 2 predicted, 1 gold; doc 3: None against 2 gold.
    # Summed: tp 1, 3 predicted, 4 gold: P 1/3, R 1/4, F1 2/7 (a macro average would differ).
    p, r, f = micro_prf([{A}, {X, Y}, None], [{A}, {B}, {C, D}])
    assert (p, r, f) == pytest.approx((1 / 3, 1 / 4, 2 / 7))


def test_a_right_triple_in_the_wrong_document_does_not_count():
    assert micro_prf([{B}, {A}], [{A}, {B}]) == (0.0, 0.0, 0.0)


def test_duplicates_count_once_after_normalisation():
    pred = [A, A, Triple("Drug  A", " DISEASE A", "CID"), ("drug a", "disease a", "cid")]
    assert micro_prf([pred], [[A, A]]) == (1.0, 1.0, 1.0)
    p, r, f = micro_prf([[A, A, X, X]], [{A}])
    assert (p, r, f) == pytest.approx((1 / 2, 1.0, 2 / 3))


def test_exact_match_only():
    near = Triple("drug a", "disease a.", "cid")
    assert micro_prf([{near}], [{A}]) == (0.0, 0.0, 0.0)


def test_nothing_to_count_and_length_mismatch():
    assert micro_prf([], []) == (0.0, 0.0, 0.0)
    assert micro_prf([set()], [set()]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="2 predictions for 1 gold"):
        micro_prf([set(), set()], [set()])


# --- BC5CDR on the real files ------------------------------------------------------------

# Per split: CID lines in the file (the corpus README's counts), kept (named) relations, and the
# relations left unnamed (see the bc5cdr_data docstring).
CDR_COUNTS = {
    "train": (1038, 1037, [("3800626", ("D010423", "D005355"))]),
    "dev": (
        1012,
        1009,
        [
            ("9022662", ("D010389", "D001264")),
            ("9022662", ("D010389", "D002819")),
            ("1595783", ("D000638", "D011014")),
        ],
    ),
    "test": (
        1066,
        1064,
        [("9578276", ("C020731", "D006973")), ("9578276", ("C020731", "D007022"))],
    ),
}


@pytest.fixture(scope="module")
def cdr(mirror_dir: Path) -> dict[str, Path]:
    return {split: mirror_dir / "biogpt" / rel for split, rel in bc5cdr_data.FILES.items()}


@pytest.fixture(scope="module")
def cdr_examples(cdr: dict[str, Path]):
    return bc5cdr_data.bc5cdr_splits(cdr["train"], cdr["dev"], cdr["test"])


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_bc5cdr_counts(split: str, cdr: dict[str, Path], cdr_examples):
    raw, kept, unnamed = CDR_COUNTS[split]
    docs = list(bc5cdr_data.iter_pubtator(cdr[split]))
    assert len(docs) == 500
    assert sum(len(d.relations) for d in docs) == raw
    assert [(d.pmid, u) for d in docs for u in bc5cdr_data.cid_triples(d)[1]] == unnamed
    examples = cdr_examples[split]
    assert len(examples) == 500  # every abstract keeps at least one relation
    assert sum(len(e.triples) for e in examples) == kept
    assert sum(len(e.gold) for e in examples) == kept  # no two relations get the same names
    assert len({e.id for e in examples}) == 500


def test_bc5cdr_known_documents(cdr_examples):
    by_id = {e.id: e for e in cdr_examples["train"]}
    first = by_id["227508"]
    assert first.target == "the relation between alpha-methyldopa and hypotensive exists."
    # The title ends with ".", so BioGPT joins with a space; all of it lower-cased.
    assert first.source.startswith(
        "naloxone reverses the antihypertensive effect of clonidine. in unanesthetized, "
    )
    assert first.source.endswith("central control of sympathetic tone.")
    # D014786 is named by "ocular toxicity" and "visual toxicity" (composites' individual
    # names) and "a loss of visual acuity": the longest wins. Order: the CID lines'.
    composite = by_id["2234245"]
    assert composite.target == (
        "the relation between desferrioxamine and pigmentary retinal deposits exists; "
        "the relation between desferrioxamine and a loss of visual acuity exists; "
        "the relation between desferrioxamine and neurosensorial hearing loss exists."
    )
    # "pneumonitis" (D011014) is later the individual name of D000542 inside "hypersensitivity
    # pneumonitis": the last id takes the text, D011014 is left unnamed, its relation dropped.
    taken = {e.id: e for e in cdr_examples["dev"]}["1595783"]
    assert taken.target == "the relation between amiodarone and hypersensitivity exists."


def _doc(*mentions: tuple[str, str, str]) -> bc5cdr_data.PubTatorDocument:
    """A document of (text, type, ids) mentions; offsets are not checked on this path."""
    return bc5cdr_data.PubTatorDocument(
        "9",
        "t",
        "a",
        tuple(bc5cdr_data.Mention(0, 0, t, e, tuple(i.split("|"))) for t, e, i in mentions),
        (("CID", "D1", "D2"),),
    )


def test_bc5cdr_naming_rules():
    # The longest name wins; on a tie the one seen first ("Abc" lower-cased, not "xyz").
    doc = _doc(("Abc", "Chemical", "D1"), ("xyz", "Chemical", "D1"), ("ab", "Chemical", "D1"))
    assert bc5cdr_data.id_to_name(doc, "Chemical") == {"D1": "abc"}
    # A later mention of the same text with another id (here none) takes the text over.
    doc = _doc(("abc", "Chemical", "D1"), ("xy", "Chemical", "D1"), ("ABC", "Chemical", "-1"))
    assert bc5cdr_data.id_to_name(doc, "Chemical") == {"D1": "xy", "-1": "abc"}
    # Types are kept apart, and a composite without individual names names nothing.
    doc = _doc(("pain", "Chemical", "D1"), ("ache or pain", "Disease", "D2|D3"))
    assert bc5cdr_data.id_to_name(doc, "Disease") == {}
    assert bc5cdr_data.cid_triples(doc) == ([], [("D1", "D2")])
    assert bc5cdr_data.to_example(doc) is None


def test_bc5cdr_source_join_follows_the_title_end():
    assert bc5cdr_data.source_text("A Title.", "Text.") == "a title. text."
    assert bc5cdr_data.source_text("Is it (so)?", "Text.") == "is it (so)? text."
    assert bc5cdr_data.source_text("No period", "Text.") == "no period. text."


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_bc5cdr_targets_round_trip(split: str, cdr_examples):
    for e in cdr_examples[split]:
        assert render_target(e.triples, CDR) == e.target
        assert parse_target(e.target, CDR, e.source) == e.gold, e.id
    # Without the source only the one chemical name with " and " in it is misread.
    misread = [e.id for e in cdr_examples[split] if parse_target(e.target, CDR) != e.gold]
    assert misread == (["1728522"] if split == "train" else [])


# --- DDI on the real files ---------------------------------------------------------------

# Per split: documents, triples, examples kept (documents with triples), distinct triples.
DDI_COUNTS = {
    "train": (664, 3572, 469, 3549),
    "dev": (50, 305, 41, 302),
    "test": (191, 949, 191, 941),
}


@pytest.fixture(scope="module")
def ddi(mirror_dir: Path) -> dict[str, Path]:
    return {split: mirror_dir / "biogpt" / rel for split, rel in ddi_data.FILES.items()}


@pytest.fixture(scope="module")
def ddi_examples(ddi: dict[str, Path]):
    return ddi_data.ddi_splits(ddi["train"], ddi["dev"], ddi["test"])


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_ddi_counts(split: str, ddi: dict[str, Path], ddi_examples):
    n_docs, n_triples, n_examples, n_distinct = DDI_COUNTS[split]
    raw = ddi_data.load_json(ddi[split])
    assert len(raw) == n_docs
    assert sum(len(d["triples"] or ()) for d in raw.values()) == n_triples
    examples = ddi_examples[split]
    assert len(examples) == n_examples
    assert sum(len(e.triples) for e in examples) == n_triples  # kept documents keep them all
    assert sum(len(e.gold) for e in examples) == n_distinct
    assert {t.relation for e in examples for t in e.triples} <= set(ddi_data.INTERACTION_TYPES)


def test_ddi_known_document(ddi_examples):
    e = {e.id: e for e in ddi_examples["test"]}["DDI-DrugBank.d698"]
    assert e.source.startswith("interactions for vitamin b2 (riboflavin):  alcohol - impairs")
    # BioGPT's order: "Alcohol" and "Probenecid" are looked up as spelled in the lower-cased
    # text, are not found, and so come first, although "riboflavin" occurs earlier.
    assert e.target == (
        "the interaction between alcohol and riboflavin is mechanism; "
        "the interaction between probenecid and riboflavin is mechanism; "
        "the interaction between riboflavin and probenecid is effect."
    )


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_ddi_targets_round_trip(split: str, ddi_examples):
    for e in ddi_examples[split]:
        assert render_target(e.triples, DDI) == e.target
        assert parse_target(e.target, DDI) == e.gold, e.id


# --- malformed input ---------------------------------------------------------------------

TITLE = "1|t|Drug X causes pain."
ABSTRACT = "1|a|Pain and renal and hepatic failure after X."
# The offsets count in "Drug X causes pain. Pain and renal and hepatic failure after X.".


def _pubtator(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "corpus.PubTator.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_well_formed_pubtator_file_parses(tmp_path: Path):
    path = _pubtator(
        tmp_path,
        TITLE,
        ABSTRACT,
        "1\t0\t6\tDrug X\tChemical\tD1",
        "1\t14\t18\tpain\tDisease\tD2",
        "1\t20\t24\tPain\tDisease\tD2",
        "1\t29\t54\trenal and hepatic failure\tDisease\tD3|D4\trenal failure|hepatic failure",
        "1\t61\t62\tX\tChemical\tD1",
        "1\tCID\tD1\tD2",
        "1\tCID\tD1\tD4",
        "",
        "2|t|Second.",
        "2|a|",
    )  # the file may end without a blank line
    docs = list(bc5cdr_data.iter_pubtator(path))
    assert [d.pmid for d in docs] == ["1", "2"]
    assert docs[0].mentions[3].names == ("renal failure", "hepatic failure")
    (example,) = bc5cdr_data.load_split(path)
    assert example.target == (
        "the relation between drug x and pain exists; "
        "the relation between drug x and hepatic failure exists."
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1\tzero\t6\tDrug X\tChemical\tD1", "not integers"),
        ("1\t0\t5\tDrug X\tChemical\tD1", "not 'Drug X'"),
        ("1\t0\t999\tDrug X\tChemical\tD1", "outside the"),
        ("1\t0\t6\tDrug X\tChemical", "got 5 field"),
        ("2\t0\t6\tDrug X\tChemical\tD1", "PMID '2' inside document 1"),
        ("1\t0\t6\tDrug X\tChemical\tD1|D2\tone", "1 individual names for 2 ids"),
        ("1\t0\t6\tDrug X\tChemical\tD1||D2", "empty id"),
        ("1\tCID\tD1\t", "empty id"),
        ("1\t12\tD1\tD2", "relation type '12'"),
        ("1\t0\t6\tDrug\tX\tChemical\tD1\tx", "got 8 field"),
        ("1|a|A second abstract.", "does not follow its title"),
        ("just some text", "got 1 field"),
    ],
)
def test_malformed_pubtator_lines_name_file_and_line(tmp_path: Path, bad: str, message: str):
    path = _pubtator(tmp_path, TITLE, ABSTRACT, "1\t14\t18\tpain\tDisease\tD2", bad)
    with pytest.raises(ValueError, match=message) as info:
        list(bc5cdr_data.iter_pubtator(path))
    assert str(info.value).startswith(f"{path}:4: ")


def test_pubtator_structure_errors_name_file_and_line(tmp_path: Path):
    before = _pubtator(tmp_path, "1\t0\t6\tDrug X\tChemical\tD1", TITLE)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(before))}:1: annotation line before a title"
    ):
        list(bc5cdr_data.iter_pubtator(before))
    no_abstract = _pubtator(tmp_path, TITLE, "", "2|t|Other.")
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(no_abstract))}:2: document 1 has no abstract"
    ):
        list(bc5cdr_data.iter_pubtator(no_abstract))
    at_end = _pubtator(tmp_path, TITLE)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(at_end))}:1: document 1 has no abstract"
    ):
        list(bc5cdr_data.iter_pubtator(at_end))
    twice = _pubtator(tmp_path, TITLE, ABSTRACT, "", TITLE, ABSTRACT)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(twice))}:4: document 1 appears twice"):
        list(bc5cdr_data.iter_pubtator(twice))


def test_pubtator_errors_surface_while_streaming(tmp_path: Path):
    path = _pubtator(tmp_path, TITLE, ABSTRACT, "", "2|t|Two.", "2|a|Two.", "2\tbroken")
    docs = bc5cdr_data.iter_pubtator(path)
    assert next(docs).pmid == "1"  # the good document comes out before the bad line is read
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:6: "):
        next(docs)


def _ddi(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ddi.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def test_ddi_malformed_input_names_the_file(tmp_path: Path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "d1": {\n  "abstract": "x",,\n }\n}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(broken))}:3: not valid JSON"):
        ddi_data.load_split(broken)
    triple = {"drug": "a", "target": "b", "interaction": "synergy"}
    bad_type = _ddi(tmp_path, {"d1": {"abstract": "a b", "triples": [triple]}})
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(bad_type))}: document d1, triple 0: .*'synergy'"
    ):
        ddi_data.load_split(bad_type)
    no_abstract = _ddi(tmp_path, {"d1": {"triples": []}})
    with pytest.raises(ValueError, match=rf"^{re.escape(str(no_abstract))}: document d1 lacks"):
        ddi_data.load_split(no_abstract)
    empty_drug = _ddi(tmp_path, {"d1": {"abstract": "x", "triples": [{**triple, "drug": " "}]}})
    with pytest.raises(ValueError, match="triple 0: needs non-empty strings"):
        ddi_data.load_split(empty_drug)
    not_docs = _ddi(tmp_path, [1, 2])
    with pytest.raises(ValueError, match="expected an object of documents, got list"):
        ddi_data.load_split(not_docs)


def test_ddi_documents_without_triples_are_dropped(tmp_path: Path):
    path = _ddi(
        tmp_path,
        {
            "d1": {"abstract": "Nothing here.", "triples": []},
            "d2": {"abstract": "Also nothing.", "triples": None},
            "d3": {
                "abstract": " B with\nA. ",
                "triples": [{"drug": "a", "target": "B", "interaction": "Effect"}],
            },
        },
    )
    (example,) = ddi_data.load_split(path)
    assert (example.id, example.source) == ("d3", "b with a.")
    assert example.target == "the interaction between a and b is effect."
