"""PubMedQA: the official split reproduced exactly, formats, parsing, multi-stage sources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mediswift.finetune.pubmedqa import (
    PubMedQA,
    check_test_split,
    load_json,
    official_pqal_split,
    pqaa_splits,
    pqal_splits,
    pqau_examples,
)


@pytest.fixture(scope="module")
def pqal(mirror_dir: Path) -> tuple[Path, Path]:
    d = mirror_dir / "pubmedqa"
    return d / "ori_pqal.json", d / "test_ground_truth.json"


def test_split_reproduces_official_test_set(pqal: tuple[Path, Path]) -> None:
    ori, gt = pqal
    folds, test = official_pqal_split(load_json(ori))
    truth = load_json(gt)
    # Same ids, same order of labels as the published ground truth, exactly.
    assert {p: it["final_decision"] for p, it in test.items()} == truth
    assert Counter(truth.values()) == {"yes": 276, "no": 169, "maybe": 55}
    assert [len(f) for f in folds] == [50] * 10
    cv = [p for f in folds for p in f]
    assert len(set(cv)) == 500 and not set(cv) & set(test)


def test_fold0_is_450_train_50_dev(pqal: tuple[Path, Path]) -> None:
    s = pqal_splits(*pqal, fold=0)
    assert {k: len(v) for k, v in s.items()} == {"train": 450, "dev": 50, "test": 500}
    ids = [{e.id for e in v} for v in s.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    # Stratified: every part keeps roughly the 55/34/11 label proportions.
    assert Counter(e.label for e in s["dev"]) == {"yes": 27, "no": 17, "maybe": 6}
    # Another fold is another dev set over the same 500 items.
    s3 = pqal_splits(*pqal, fold=3)
    assert {e.id for e in s3["dev"]} != {e.id for e in s["dev"]}
    assert {e.id for e in s3["train"] + s3["dev"]} == {e.id for e in s["train"] + s["dev"]}


def test_tampered_ground_truth_is_refused(pqal: tuple[Path, Path], tmp_path: Path) -> None:
    ori, gt = pqal
    truth = load_json(gt)
    pmid = next(iter(truth))
    truth[pmid] = "maybe" if truth[pmid] != "maybe" else "yes"
    bad = tmp_path / "test_ground_truth.json"
    bad.write_text(json.dumps(truth))
    with pytest.raises(ValueError, match="differs from the ground truth"):
        pqal_splits(ori, bad)
    with pytest.raises(ValueError, match="label differs"):
        check_test_split(official_pqal_split(load_json(ori))[1], truth, "x")


def test_reasoning_required_format(pqal: tuple[Path, Path]) -> None:
    ori, gt = pqal
    data = load_json(ori)
    ex = pqal_splits(ori, gt)["dev"][0]
    item = data[ex.id]
    assert ex.source == f"question: {item['QUESTION']} context: {' '.join(item['CONTEXTS'])}"
    assert item["LONG_ANSWER"] not in ex.source  # reasoning-required: no long answer
    assert ex.target == f"the answer to the question given the context is {item['final_decision']}."


def test_majority_baseline_is_55_2_percent(pqal: tuple[Path, Path]) -> None:
    s = pqal_splits(*pqal)
    task = PubMedQA()
    maj = task.majority([e.label for e in s["train"]])
    assert maj == "yes"
    assert task.metric([maj] * 500, [e.label for e in s["test"]]) == pytest.approx(0.552)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("the answer to the question given the context is yes.", "yes"),
        ("The answer to the question given the context is  maybe .", "maybe"),
        ("blah the answer to the question given the context is no, really", "no"),
        ("the answer to the question given the context is nothing.", None),
        ("yes", None),
        ("", None),
    ],
)
def test_parse_generated_answer(text: str, label: str | None) -> None:
    assert PubMedQA().parse(text) == label


def test_pqaa_and_pqau_sources(pqal: tuple[Path, Path], tmp_path: Path) -> None:
    data = load_json(pqal[0])
    items = list(data.items())
    pqaa = tmp_path / "ori_pqaa.json"
    pqaa.write_text(json.dumps(dict(items[:30])))
    s = pqaa_splits(pqaa, train_size=25)
    assert len(s["train"]) == 25 and len(s["dev"]) == 5
    assert {e.id for e in s["train"]} | {e.id for e in s["dev"]} == {p for p, _ in items[:30]}
    assert pqaa_splits(pqaa, train_size=25)["dev"] == s["dev"]  # seeded, like upstream
    with pytest.raises(ValueError, match="no dev set"):
        pqaa_splits(pqaa, train_size=30)
    pqau = tmp_path / "ori_pqau.json"
    unlabelled = {p: {k: v for k, v in it.items() if k != "final_decision"} for p, it in items[:3]}
    pqau.write_text(json.dumps(unlabelled))
    assert [e.label for e in pqau_examples(pqau)] == [None] * 3  # pseudo-labelled in training
    mixed = {**unlabelled, **dict(items[30:31])}
    pqau.write_text(json.dumps(mixed))
    with pytest.raises(ValueError, match="all or none"):
        pqau_examples(pqau)
    pqau.write_text(json.dumps(dict(items[30:40])))
    assert len(pqau_examples(pqau)) == 10


def write_hub_parquet(path: Path, items: list[tuple[str, dict]], labelled: bool) -> None:
    """PubMedQA items in the maintainers' Hugging Face Parquet layout (pqa_artificial /
    pqa_unlabeled: pubid, question, context{contexts, labels, meshes}, long_answer[,
    final_decision])."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "pubid": int(p),
            "question": it["QUESTION"],
            "context": {"contexts": it["CONTEXTS"], "labels": it["LABELS"], "meshes": []},
            "long_answer": it.get("LONG_ANSWER", ""),
            **({"final_decision": it["final_decision"]} if labelled else {}),
        }
        for p, it in items
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_published_parquet_format(pqal: tuple[Path, Path], tmp_path: Path) -> None:
    items = list(load_json(pqal[0]).items())
    write_hub_parquet(tmp_path / "pqa_artificial.parquet", items[:30], labelled=True)
    write_hub_parquet(tmp_path / "pqa_unlabeled.parquet", items[30:40], labelled=False)
    a = pqaa_splits(tmp_path / "pqa_artificial.parquet", train_size=25)
    from_json = {p: it for p, it in items[:30]}
    ex = a["train"][0]
    assert ex.label == from_json[ex.id]["final_decision"]
    assert ex.source.startswith(f"question: {from_json[ex.id]['QUESTION']} context: ")
    u = pqau_examples(tmp_path / "pqa_unlabeled.parquet")
    assert len(u) == 10 and all(e.label is None and e.target == "" for e in u)
