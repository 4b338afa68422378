"""Recipes, overrides, the mirror mapping and the stage plan's key chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.registry import parse_stages, plan
from mediswift.cli import main
from mediswift.config import load_recipe
from mediswift.overrides import Overrides, parse_set

RECIPES = ["demo", "repro-small", "repro-claims", "paper", "paper-med", "paper-large", "paper-xl"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_validate(name: str) -> None:
    cfg = load_recipe(name)
    assert cfg.name == name
    assert cfg.download.pubmed_url == "https://ftp.ncbi.nlm.nih.gov/pubmed/"


def test_paper_recipes_follow_table5() -> None:
    for size in ("med", "large", "xl"):
        pt = load_recipe(f"paper-{size}").pretrain
        assert (pt.model, pt.steps, pt.global_batch, pt.seq_len) == (size, 200_000, 512, 1024)
        assert pt.sparsity_levels == [0.0, 0.5, 0.75]
        # 200k steps x 512 x 1024 = the paper's 104.86B training tokens
        assert pt.steps * pt.global_batch * pt.seq_len == pytest.approx(104.86e9, rel=1e-3)


def test_paper_recipes_fine_tune_pubmedqa_in_stages() -> None:
    for name in ("paper", "paper-med", "paper-large", "paper-xl"):
        pqa = load_recipe(name).finetune.tasks["pubmedqa"]
        assert pqa.pqa_a_url.endswith("pqa_artificial/train-00000-of-00001.parquet")
        assert pqa.pqa_u_url.endswith("pqa_unlabeled/train-00000-of-00001.parquet")


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        load_recipe(str(bad))


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("pretrain.stpes", "unknown setting pretrain.stpes; did you mean pretrain.steps?"),
        ("pretrian.steps", "unknown setting pretrian; did you mean pretrain?"),
        ("pretrain.zzzzz", "unknown setting pretrain.zzzzz"),  # nothing close: no guess
    ],
)
def test_an_unknown_setting_names_the_closest_known_one(key: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_recipe("demo", parse_set([f"{key}=5"]))
    assert str(refused.value).endswith(f": {said}")


def test_mirror_remaps_every_upstream(tmp_path: Path) -> None:
    cfg = load_recipe("demo", mirror=str(tmp_path))
    d = cfg.download
    assert cfg.resolve(d.pubmed_url + "baseline/") == f"{tmp_path}/pubmed/baseline/"
    assert cfg.resolve(d.pmc_url).startswith(f"{tmp_path}/pmc")
    pqa, hoc = cfg.finetune.task("pubmedqa"), cfg.finetune.task("hoc")
    assert cfg.resolve(pqa.sources()["ori_pqal"]) == f"{tmp_path}/pubmedqa/ori_pqal.json"
    assert cfg.resolve(hoc.sources()["train"]) == f"{tmp_path}/hoc/train.tsv"
    http = load_recipe("demo", mirror="http://127.0.0.1:8000")
    assert http.resolve(d.pmc_url + "PMC1.1/x.xml") == "http://127.0.0.1:8000/pmc/PMC1.1/x.xml"


def test_env_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDISWIFT_MIRROR", str(tmp_path))
    assert load_recipe("demo").mirror == str(tmp_path)
    assert load_recipe("demo", mirror="http://x").mirror == "http://x"


def test_overrides_merge_into_recipe() -> None:
    ov = Overrides(pretrain_steps=7, sparsity_levels=[0.5], extra={"pretrain": {"lr": 1e-3}})
    cfg = load_recipe("demo", ov.as_recipe_fragment())
    assert (cfg.pretrain.steps, cfg.pretrain.sparsity_levels, cfg.pretrain.lr) == (7, [0.5], 1e-3)
    assert parse_set(["pretrain.steps=5", "finetune.seeds=[0, 1]"]) == {
        "pretrain": {"steps": 5},
        "finetune": {"seeds": [0, 1]},
    }


def test_key_chain_rekeys_only_downstream(tmp_path: Path) -> None:
    base = plan(load_recipe("demo"), tmp_path)
    ft = plan(load_recipe("demo", {"finetune": {"patience": 9}}), tmp_path)
    vocab = plan(load_recipe("demo", {"vocab": {"vocab_size": 500}}), tmp_path)
    same = lambda a, b, stages: all(a[s].key == b[s].key for s in stages)  # noqa: E731
    assert same(base, ft, ["download", "parse", "filter", "vocab", "tokenize", "pretrain"])
    assert not same(base, ft, ["finetune"]) and not same(base, ft, ["evaluate"])
    assert same(base, vocab, ["download", "parse", "filter"])
    assert all(base[s].key != vocab[s].key for s in ["vocab", "tokenize", "pretrain", "finetune"])


def test_stage_selection() -> None:
    assert parse_stages("filter,download") == ["download", "filter"]
    assert parse_stages(None)[-1] == "evaluate"
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("download,nope")


def test_cli_dry_run_prints_plan_and_flops(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["run", "--recipe", "paper-xl", "--dry-run", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "104.86B tokens" in out
    assert "sparsity 0.75" in out and "to run" in out


def test_cli_flops_matches_table6(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--model", "xl", "--sparsity", "0.75", "--tokens", "104.86e9"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(3.448e20, rel=0.01)


def test_cli_unknown_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--recipe", "nope", "--dry-run"]) == 2
    assert "recipe 'nope' not found" in capsys.readouterr().err


def test_a_recipe_nested_too_deep_is_named(tmp_path):
    """A YAML nested past the parser's recursion (50,000 brackets) is refused in one line that
    names the file, not with a RecursionError."""
    import pytest

    path = tmp_path / "deep.yaml"
    path.write_text("pretrain: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ValueError, match=r"deep\.yaml: nested deeper than a recipe can be"):
        load_recipe(str(path))
