"""Decontamination (13-gram overlap with dev/test examples), the corpus cut-off and the
PubMed/PMC overlap rule: the library functions, on small hand-made inputs, and the memory bound
of the scan on a generated corpus."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.data.contamination import EvalText, NgramIndex, ngrams, normalise, summarise
from mediswift.data.decontaminate import cut_windows, screen, word_spans
from mediswift.data.filters import REASONS, ShardRef, apply_plan, plan_filter
from mediswift.data.shards import Document, write_documents

# 20 words: a 13-gram of it is any 13 consecutive of them.
SECRET = (
    "Cisplatin-induced nephrotoxicity was markedly attenuated by co-administration of "
    "amifostine in 41 of 52 patients, without loss of antitumour efficacy at 6 months."
)
WORDS = normalise([SECRET]).to_pylist()[0].split()


def index(*texts: str, n: int = 13) -> NgramIndex:
    examples = [EvalText("task", "test", f"ex{i}", (t,)) for i, t in enumerate(texts)]
    return NgramIndex.build(examples, n)


def found(idx: NgramIndex, docs: list[str | None], **kw) -> dict[int, tuple[int, ...]]:
    return {m.row: m.examples for m in idx.find(docs, **kw)}


def test_normalise_makes_gpt3_words() -> None:
    # GPT-3: "a lowercase, whitespace delimited word with no punctuation": punctuation is
    # deleted, so it joins what it stood between; only white space separates words.
    got = normalise(["  Anti-inflammatory (IL-6)\tlevels:\n2.5 mg/kg ﬁne ", None, "...",
                     "a\u00a0b\u2028c\x0bd - e\x85f"])  # fmt: skip
    assert got.to_pylist() == ["antiinflammatory il6 levels 25 mgkg fine", "", "", "a b c d e f"]


def test_found_whatever_the_case_punctuation_and_spacing() -> None:
    idx = index("An unrelated example that is long enough to have a few thirteen-grams of its own.",
                SECRET)  # fmt: skip
    disguised = "Background. " + SECRET.upper().replace(" ", "  \n").replace(",", " ;") + " Done."
    assert found(idx, ["a clean document", disguised, None, ""]) == {1: (1,)}


def test_twelve_shared_words_are_not_enough_thirteen_are() -> None:
    idx = index(SECRET)
    twelve = "prefix words " + " ".join(WORDS[3:15]) + " suffix words"
    thirteen = "prefix words " + " ".join(WORDS[3:16]) + " suffix words"
    assert found(idx, [twelve, thirteen]) == {1: (0,)}
    assert found(index(SECRET, n=5), [" ".join(WORDS[7:12])]) == {0: (0,)}  # n is a setting


def test_ngrams_never_span_two_texts() -> None:
    # The example's source and target are separate texts; corpus documents are separate too.
    split = NgramIndex.build(
        [EvalText("t", "dev", "1", (" ".join(WORDS[:7]), " ".join(WORDS[7:14])))]
    )
    assert found(split, [" ".join(WORDS[:14])]) == {}
    idx = index(SECRET)
    assert found(idx, [" ".join(WORDS[:7]), " ".join(WORDS[7:14])]) == {}
    g = ngrams(normalise(["a b c", "", "d e", "f g h"]), 2)
    assert [g.text(i, 2) for i in range(len(g.hashes))] == ["a b", "b c", "d e", "f g", "g h"]
    assert g.doc.tolist() == [0, 0, 2, 3, 3]


def test_hash_hits_are_confirmed_on_the_words() -> None:
    # An index whose hashes come from SECRET but whose example says something else: every hash
    # hits, none is confirmed, so nothing is reported (a 64-bit collision cannot drop a document).
    real = index(SECRET)
    other = [EvalText("task", "test", "ex0", ("completely different words " * 5,))]
    forged = NgramIndex(13, other, real.hashes, real.owners)
    assert found(real, [SECRET]) == {0: (0,)}
    assert found(forged, [SECRET]) == {}


def test_a_shared_ngram_reports_every_example_holding_it() -> None:
    idx = index(
        SECRET, "Another abstract: " + SECRET, "nothing in common with the others at all here"
    )
    assert found(idx, ["x " + SECRET]) == {0: (0, 1)}


def test_chunking_does_not_change_what_is_found() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    docs: list[str | None] = [
        " ".join(rng.choices(vocab, k=rng.randint(0, 60))) for _ in range(300)
    ]
    for i in (0, 17, 150, 299):
        docs[i] = f"{docs[i]} {SECRET} {docs[i]}"
    docs[40], docs[41] = None, ""
    idx = index(SECRET, " ".join(vocab[:40]))
    whole = found(idx, docs)
    assert set(whole) >= {0, 17, 150, 299}
    assert found(idx, docs, chunk_bytes=1) == whole == found(idx, docs, chunk_bytes=700)


def test_short_examples_cannot_be_checked_and_are_counted_so() -> None:
    idx = NgramIndex.build(
        [EvalText("qa", "dev", "a", (SECRET, "yes")), EvalText("qa", "test", "b", ("too short",))]
    )
    assert idx.checked().tolist() == [True, False]
    assert idx.coverage() == {
        "examples": {"qa": {"dev": 1, "test": 1}},
        "checked": {"qa": {"dev": 1, "test": 0}},
    }


def test_index_round_trip_and_digest(tmp_path: Path) -> None:
    idx = index(SECRET, "A second example, with words enough to make at least one thirteen-gram.")
    idx.save(tmp_path / "i")
    back = NgramIndex.load(tmp_path / "i")
    assert back.digest() == idx.digest() and back.examples == idx.examples
    assert found(back, [SECRET]) == {0: (0,)}
    assert index(SECRET).digest() != idx.digest() != index(SECRET, n=12).digest()


def test_summary_is_bounded_by_the_evaluation_set() -> None:
    examples = [EvalText("t", "test", "b", ("x",)), EvalText("t", "dev", "a", ("y",))]
    matches = [(f"doc{i}", [0]) for i in range(100)] + [("doc7", [0, 1])]
    rows = summarise(examples, matches, max_docs=3)
    assert rows == [
        {"task": "t", "split": "dev", "id": "a", "documents": 1, "doc_ids": ["doc7"]},
        {"task": "t", "split": "test", "id": "b", "documents": 101, "doc_ids": ["doc0", "doc1", "doc2"]},
    ]  # fmt: skip


def test_apply_plan_drops_contaminated_rows(tmp_path: Path) -> None:
    half = len(WORDS) // 2
    docs = [
        Document("c1", "corpus:x", title="clean", text="nothing to see"),
        # The title and the text are read as one document: a 13-gram across them counts.
        Document("c2", "corpus:x", title=" ".join(WORDS[:half]), text=" ".join(WORDS[half:])),
        Document("c3", "corpus:x", title="", text=" ".join(WORDS[:12])),
        Document("c4", "corpus:x", title="", text=SECRET),  # dropped earlier by the plan
    ]
    shard = tmp_path / "in.parquet"
    write_documents(shard, docs)
    codes = np.array([0, 0, 0, REASONS.index("duplicate")], dtype=np.uint8)
    result = apply_plan(shard, codes, tmp_path / "out.parquet", "s", 0.0, index(SECRET))
    assert pq.read_table(tmp_path / "out.parquet")["doc_id"].to_pylist() == ["c1", "c3"]
    assert result["contamination"] == 1 and result["matches"] == [["c2", [0]]]
    assert result["n_docs"] == 2
    plain = apply_plan(shard, codes, tmp_path / "plain.parquet", "s", 0.0)
    assert plain["n_docs"] == 3 and "contamination" not in plain


# -- the boilerplate guard and the window cut ---------------------------------------------------
BOILERPLATE = "Keep medicine out of the sight and reach of children at all times."  # 13 words


def test_a_document_sharing_only_a_boilerplate_ngram_is_kept(tmp_path: Path) -> None:
    """The guard through the filter's own units: a 13-gram found in more than
    `contamination_max_docs` corpus documents is ignored, so 11 label documents sharing it with
    an example are kept whole while the copied abstract is still dropped; at a threshold of 11
    the same documents are dropped."""
    from mediswift.stages import filter as S
    from mediswift.stages import filter_contamination as C

    home = tmp_path
    labels = [Document(f"label{i}", "corpus:x", text=f"Drug {i}. {BOILERPLATE} Dose {i} mg.")
              for i in range(11)]  # fmt: skip
    docs = [*labels, Document("copy", "corpus:x", text=f"Intro. {SECRET}"),
            Document("clean", "corpus:x", text="nothing to see")]  # fmt: skip
    write_documents(home / "in.parquet", docs)
    np.save(home / "codes.npy", np.zeros(len(docs), dtype=np.uint8))
    index(f"Patients were told: {BOILERPLATE}", SECRET).save(home / "idx")
    paths = {"codes": "codes.npy", "codes_digest": "c", "ngrams": "idx", "ngrams_digest": "i"}
    counted = C.run_counts(C.CountSpec(shard="in.parquet", **paths), home)
    kept = {}
    for max_docs in (10, 11):
        freq = C.run_frequent(C.FrequentSpec(counts=(counted.digest,), max_docs=max_docs,
                                             files=(counted.path,)), home)  # fmt: skip
        spec = S.ShardSpec(shard="in.parquet", split_salt="s", validation_fraction=0.0,
                           decontaminate_mode="document", frequent=freq.path,
                           frequent_digest=freq.digest, **paths)  # fmt: skip
        result = S.run_shard(spec, home)
        out = pq.read_table(home / result.path)["doc_id"].to_pylist()
        kept[max_docs] = (freq.ignored, result.contamination_spared, out)
    assert len(normalise([BOILERPLATE]).to_pylist()[0].split()) == 13
    assert kept[10] == (1, 11, [d.doc_id for d in labels] + ["clean"])
    assert kept[11] == (0, 0, ["clean"])


def test_window_mode_cuts_the_ngram_and_200_characters_either_side() -> None:
    before = " ".join(f"before{i:03d}" for i in range(60))  # 599 characters
    after = " ".join(f"after{i:03d}" for i in range(60))
    text = f"{before} {SECRET} {after}"
    idx = index(SECRET)
    (m,) = idx.find([text])
    pieces = cut_windows(text, [h.word for h in m.hits], 13)
    assert pieces is not None and len(pieces) == 2
    start, end = text.index(SECRET), text.index(SECRET) + len(SECRET)
    assert pieces[0] == text[: start - 200].strip() and pieces[1] == text[end + 200 :].strip()
    s = screen([text, "clean text"], idx, mode="window")
    assert s.keep.tolist() == [True, True] and s.cut == {0: "\n\n".join(pieces)}
    # Pieces under 200 characters are discarded: a short document loses everything.
    assert screen([f"Intro. {SECRET} End."], idx, mode="window").keep.tolist() == [False]
    # More than 10 pieces: the document is dropped whole.
    many = f" {before} ".join([SECRET] * 11)
    assert cut_windows(many, [h.word for h in idx.find([many])[0].hits], 13) is None


def test_word_spans_are_the_normalised_words_in_the_original_text() -> None:
    text = "  Anti-inflammatory (IL-6) -- levels:\u00a0ﬁne 2.5 mg/kg ... end"
    spans = word_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Anti-inflammatory", "(IL-6)", "levels:", "ﬁne", "2.5", "mg/kg", "end",
    ]  # fmt: skip
    assert len(spans) == len(normalise([text]).to_pylist()[0].split())


def _rss_mib() -> float:
    """Resident memory of this process now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_scan_memory_stays_flat_over_a_generated_corpus() -> None:
    """Stream 40 batches of 1,500 random 150-word documents (about 55 MiB of text) past an
    index: resident memory after the first batches stays within a few MiB, far below what
    keeping the text or its n-gram hashes would take, and every hidden copy is found."""
    idx = index(SECRET, *(f"example {i} " + " ".join(WORDS) + f" {i}" for i in range(200)))
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)])
    samples, hits, streamed = [], 0, 0
    for b in range(40):
        docs = [" ".join(w) for w in vocab[rng.integers(0, len(vocab), (1500, 150))]]
        docs[b * 37 % 1500] += " " + SECRET
        streamed += sum(map(len, docs))
        hits += len(idx.find(pa.array(docs)))
        samples.append(_rss_mib())
    assert hits == 40
    growth = max(samples[10:]) - max(samples[:10])
    assert growth < 10 < streamed / 2**20 / 4, (growth, streamed, samples)


# -- the cut-off and the PubMed/PMC overlap: rules of the filter plan -------------------------
def _pm(pmid: int, year: int | None = 2020, text: str = "abstract") -> Document:
    return Document(f"pmid:{pmid}", "pubmed", pmid=str(pmid), pmid_version=1, text=text, year=year)


def _pmc(pmcid: int, pmid: str | None, text: str = "full text") -> Document:
    return Document(f"pmc:PMC{pmcid}", "pmc", pmid=pmid, pmcid=f"PMC{pmcid}", text=text, year=2020)


@pytest.fixture
def hygiene_shards(tmp_path: Path) -> list[ShardRef]:
    layout = [
        ("pubmed", [_pm(1), _pm(2, 2023), _pm(3, None), _pm(4), _pm(5), _pm(6, 2022)]),
        ("pmc", [_pmc(10, "4"), _pmc(11, "5", text=""), _pmc(12, None), _pmc(13, "n/a")]),
        ("corpus", [Document("x", "corpus:c", text="t", year=2024)]),
    ]
    refs = []
    for i, (source, docs) in enumerate(layout):
        write_documents(tmp_path / f"{i}.parquet", docs)
        refs.append(ShardRef(tmp_path / f"{i}.parquet", source))
    return refs


def test_cutoff_and_pmc_overlap(hygiene_shards: list[ShardRef]) -> None:
    codes, dropped = plan_filter(hygiene_shards, max_year=2022, pmc_overlap=True)
    names = [[REASONS[c] for c in code] for code in codes]
    assert names == [
        # 2023 is after the cut-off; no year: kept; PMID 4's full text is a kept PMC document;
        # PMID 5's PMC copy is empty (dropped), so its abstract stays.
        ["keep", "after_cutoff", "keep", "pmc_overlap", "keep", "keep"],
        ["keep", "empty_text", "keep", "keep"],
        ["after_cutoff"],
    ]
    assert dropped["after_cutoff"] == 2 and dropped["pmc_overlap"] == 1


def test_optional_rules_are_off_and_unlisted_by_default(hygiene_shards: list[ShardRef]) -> None:
    codes, dropped = plan_filter(hygiene_shards)
    assert set(dropped) == {"superseded", "deleted", "empty_text", "language", "duplicate"}
    assert sum(int((c != 0).sum()) for c in codes) == 1  # only the empty PMC document


# -- keys -----------------------------------------------------------------------------------
def test_filter_key_follows_the_evaluation_set(tmp_path: Path) -> None:
    def key(**filter_and_tasks) -> str:
        tasks = filter_and_tasks.pop("tasks", ["pubmedqa", "hoc"])
        cfg = load_recipe("demo", {"filter": filter_and_tasks, "finetune": {"tasks": tasks}})
        return plan(cfg, tmp_path)["filter"].key

    on = key(decontaminate=True)
    assert key(decontaminate=True, tasks=["pubmedqa", "hoc", "ddi"]) != on
    assert key(decontaminate=True, contamination_ngram=8) != on
    assert key(decontaminate=False) != on
    # Off, the tasks are not the filter's business: changing them re-keys finetune only.
    assert key(decontaminate=False, tasks=["hoc"]) == key(decontaminate=False)
    assert key(max_year=2022) != key() != key(pmc_overlap=True)


def test_training_settings_of_a_task_never_rekey_the_corpus() -> None:
    from flows.registry import plan
    from mediswift.config import load_recipe

    base = plan(load_recipe("demo"), Path("/nonexistent"))
    longer = plan(
        load_recipe("demo", {"finetune": {"tasks": {"hoc": {"epochs": 9}}}}), Path("/nonexistent")
    )
    fold = plan(
        load_recipe("demo", {"finetune": {"tasks": {"pubmedqa": {"pqal_fold": 3}}}}),
        Path("/nonexistent"),
    )
    assert (
        base["filter"].key == longer["filter"].key
        and base["pretrain"].key == longer["pretrain"].key
    )
    assert base["filter"].key != fold["filter"].key  # the fold decides which examples are dev
