"""The pipeline report's layout, from hand-made stage manifests (no pipeline run): results lead,
the paper's tables in the paper's order, long lists behind a count and a link, tables a page
wide, links to the runs, and figures readable with one model size."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from test_evaluate import _manifest_dicts

from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.finetune import tables
from mediswift.manifests import FinetuneManifest, PretrainManifest, SelectedPoint
from mediswift.report import write_report

STAGES = ["download", "parse", "filter", "vocab", "tokenize", "pretrain", "finetune", "evaluate"]
PAGE_COLUMNS = 8  # what a page (or a browser at the report's 60em) shows without scrolling
N_FOUND = 60


def _found(n: int) -> list[dict]:
    return [
        {"task": "pubmedqa", "split": "test", "id": f"ex-{i}", "documents": 1,
         "doc_ids": [f"pubmed:{1000 + i}"]}
        for i in range(n)
    ]  # fmt: skip


def _filter_manifest() -> dict:
    return {
        "counts": {
            "by_source": {"pubmed": {"train": 900, "validation": 10}},
            "kept": {"train": 900, "validation": 10},
            "dropped": {"contamination": N_FOUND - 20},
        },
        "rules": {
            "decontaminate": True,
            "contamination_ngram": 13,
            "decontaminate_mode": "window",
            "contamination_max_docs": 10,
        },
        "contamination": {
            "ngram": 13,
            "mode": "window",
            "max_docs": 10,
            "documents": N_FOUND,
            "dropped": N_FOUND - 20,
            "cut": 20,
            "spared": 7,
            "chars_removed": 12345,
            "boilerplate_ngrams": 3,
            "examples": {"pubmedqa": {"dev": 50, "test": 500}},
            "checked": {"pubmedqa": {"dev": 50, "test": 498}},
            "too_short": {"pubmedqa": {"dev": 0, "test": 2}},
            "found": _found(N_FOUND),
        },
    }


def _with_third_task(finetune: dict) -> dict:
    """The fixture's PubMedQA and HoC, and DDI (a task the paper has no table for)."""
    ddi = [dict(s, task="ddi") for s in finetune["sweeps"] if s["task"] == "pubmedqa"]
    finetune["sweeps"] = finetune["sweeps"] + ddi
    finetune["tasks"]["ddi"] = dict(finetune["tasks"]["pubmedqa"])
    for i, s in enumerate(finetune["sweeps"]):
        s["parent_run_id"] = f"sweep{i:03d}"
    return finetune


def make_home(home: Path) -> dict[str, Artifact]:
    """Done filter, tokenize, pretrain and evaluate outputs; the other stages not run."""
    arts = {s: Artifact(s, f"{s}-key", home / s / f"{s}-key") for s in STAGES}
    finetune, pretrain = _manifest_dicts()
    finetune = _with_third_task(finetune)
    for v in pretrain["variants"]:
        v |= {"mlflow_run_id": f"pre-{v['name']}", "final_train_loss": 6.0, "final_val_loss": 6.3}
    arts["filter"].ensure().write_manifest(_filter_manifest())
    arts["tokenize"].ensure().write_manifest({"tokens": {"train": 3_600_000}})
    arts["pretrain"].ensure().write_manifest(pretrain)
    ev, _ = tables.write_report(
        FinetuneManifest.model_validate(finetune),
        PretrainManifest.model_validate(pretrain),
        ["generate", "score"],
        "score",
        arts["evaluate"].path,
    )
    ev.mlflow_run_id = "evalrun"
    ev.results[0].selected_point = SelectedPoint(
        mode="score", batch_size=16, lr=1e-4, seed=0, unit="finetune/units/p", mlflow_run_id="pt0"
    )
    arts["evaluate"].write_manifest(ev.model_dump(mode="json"))
    return arts


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report's folder, written without links (the default local UI addresses)."""
    home = tmp_path_factory.mktemp("report") / "home"
    write_report(PipelineConfig(name="layout"), home, make_home(home), context={"date": "today"})
    return home / "report" / "layout"


def test_results_come_first_and_the_papers_tables_in_its_order(report: Path) -> None:
    md = (report / "report.md").read_text()
    heads = [md.index(h) for h in ("## Pre-training (", "## Fine-tuning", "## Pre-training data")]
    assert heads == sorted(heads), "results (pre-training, fine-tuning) before the data"
    # PubMedQA is the paper's Table 3, HoC its Table 4; tasks without a table follow.
    tasks = [md.index(f"### {t}") for t in ("pubmedqa", "hoc", "ddi")]
    assert tasks == sorted(tasks)


def test_contaminated_examples_are_a_count_and_a_link_to_the_file(report: Path) -> None:
    md = (report / "report.md").read_text()
    assert f"{N_FOUND} evaluation examples were in the corpus" in md
    assert "[contamination.csv](contamination.csv)" in md
    assert "ex-0" not in md and "pubmed:1000" not in md  # no list of ids in the report
    rows = list(csv.DictReader(io.StringIO((report / "contamination.csv").read_text())))
    assert len(rows) == N_FOUND
    assert rows[-1]["example"] == f"ex-{N_FOUND - 1}" and rows[0]["task"] == "pubmedqa"


def test_the_report_counts_what_each_decontamination_rule_did(report: Path) -> None:
    md = (report / "report.md").read_text()
    assert "- Decontamination: the shared 13-word n-gram and 200 characters" in md
    assert (
        "dropped: 40); n-grams in more than 10 corpus documents ignored as boilerplate; "
        "this project's addition, not the paper's" in md
    )
    assert "40 pre-training documents dropped; 20 cut (" in md and "12,345 characters" in md
    assert "7 kept whole for sharing only boilerplate (the 3 evaluation n-grams" in md
    assert "| Checked | Too short to check | Found |" in md
    assert "| pubmedqa | test | 500 | 498 | 2 |" in md


def _table_widths(md: str) -> list[int]:
    """Columns of each Markdown table: a header line followed by its `|---|` line."""
    lines = md.splitlines()
    return [
        line.strip().strip("|").count("|") + 1
        for line, below in zip(lines, lines[1:], strict=False)
        if line.startswith("|") and re.fullmatch(r"\|(\s*-+\s*\|)+", below.strip())
    ]


def test_every_table_fits_a_page(report: Path) -> None:
    md = (report / "report.md").read_text()
    widths = _table_widths(md)
    assert len(widths) >= 8  # data, contamination, pre-training, 3 tasks x 2 modes, runs
    assert max(widths) <= PAGE_COLUMNS, widths
    # The cells are the evaluate stage's own: the numbers do not change with the layout.
    assert "| tiny-dense | 0% | 400K | 1e+15 | 56.0 ± 1.0 |" in md


def test_the_task_tables_written_by_evaluate_fit_a_page(report: Path) -> None:
    home = report.parent.parent
    for md in (home / "evaluate" / "evaluate-key").glob("table*.md"):
        assert max(_table_widths(md.read_text())) <= PAGE_COLUMNS, md.name


def test_links_to_every_mlflow_run_and_the_flow_run(tmp_path: Path, monkeypatch) -> None:
    from mediswift.report_links import ui_links

    monkeypatch.delenv("MEDISWIFT_MLFLOW_UI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, cfg = tmp_path / "home", PipelineConfig(name="links")
    links = ui_links(cfg, home, "f1e2d3", "brave-fox", prefect_home=str(home / "prefect"))
    write_report(cfg, home, make_home(home), links=links)
    md = (home / "report" / "links" / "report.md").read_text()
    assert "[brave-fox](http://127.0.0.1:4200/runs/flow-run/f1e2d3)" in md
    # Paths of the home as $MEDISWIFT_HOME: the commands paste, and the report moves with it.
    assert 'PREFECT_HOME="$MEDISWIFT_HOME/prefect" .venv/bin/prefect server start --host' in md
    assert (
        ".venv/bin/mlflow server --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri "
        '"sqlite:///$MEDISWIFT_HOME/mlflow.db"`' in md
    )
    assert str(home) not in md
    mlflow_runs = ["pre-tiny-dense", "pre-tiny-s75", "evalrun", "sweep000", "sweep008", "pt0"]
    for run_id in mlflow_runs:
        assert f"(http://127.0.0.1:5000/#/runs/{run_id})" in md, run_id
    # The runs come after the results and the data: links, not results, close the report.
    assert md.index("## Runs") > md.index("## Pre-training data")


def _figures(monkeypatch) -> list:
    """Every matplotlib figure saved from now on."""
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_one_model_size_draws_on_a_readable_axis(tmp_path: Path, monkeypatch) -> None:
    finetune, pretrain = _manifest_dicts()  # one size: every variant is 400K parameters dense
    # ... up to the rounding of each layer's mask, which made matplotlib zoom into 4.0000e5-
    # 4.0003e5 as if the sizes differed.
    for v, extra in zip(pretrain["variants"], (0, 3, 1), strict=True):
        v["active_non_embedding_params"] += extra
    results = tables.summarize(
        FinetuneManifest.model_validate(finetune),
        PretrainManifest.model_validate(pretrain),
        ["score"],
    )
    saved = _figures(monkeypatch)
    tables.plot_sizes(results, "score", tmp_path / "sizes.png")
    for ax in saved[0].axes:
        lo, hi = ax.get_xlim()
        assert hi / lo >= 9.9, (lo, hi)  # a decade, not a sliver around 4e5
        assert [t.get_text() for t in ax.get_xticklabels()] == ["400K"]


def _three_task_results() -> list[tables.EvaluatedSweep]:
    """The summarised results of the manifests with a third task, in both modes."""
    finetune, pretrain = _manifest_dicts()
    return tables.summarize(
        FinetuneManifest.model_validate(_with_third_task(finetune)),
        PretrainManifest.model_validate(pretrain),
        ["score", "generate"],
    )


def test_figures_read_at_the_report_width(tmp_path: Path, monkeypatch) -> None:
    """Both figures fit the report's column (1000 px) at their own size, their text is at least
    10 px there, and no two labels of a panel overlap."""
    results = _three_task_results()
    saved = _figures(monkeypatch)
    tables.plot(results, "score", tmp_path / "flops.png")
    tables.plot_sizes(results, "score", tmp_path / "sizes.png")
    assert len(saved) == 2
    for fig in saved:
        width = fig.get_figwidth() * tables.FIGURE_DPI
        assert width <= 1000, width
        shown = min(1.0, 1000 / width)  # the page shrinks a wider figure to its column
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
        for ax in fig.axes:
            texts = [t for t in ax.findobj(lambda a: hasattr(a, "get_fontsize")) if t.get_text()]
            for t in texts:
                assert t.get_fontsize() * tables.FIGURE_DPI / 72 * shown >= 10, t.get_text()
            labels = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert not a.overlaps(b), [t.get_text() for t in labels]


def test_the_html_runs_paragraph_shows_the_home_mark(report: Path) -> None:
    """`<home>` is read as text on the page, not swallowed by the browser as an unknown tag."""
    import lxml.html

    page = lxml.html.fromstring((report / "report.html").read_text())
    runs = page.xpath("//h2[text()='Runs']/following-sibling::p[1]")[0]
    assert runs.text_content().startswith(
        "$MEDISWIFT_HOME is the artifact root holding this report"
    )


def test_the_report_links_the_flow_run_that_evaluated(tmp_path: Path) -> None:
    """A later run (cached, or of other stages, or on another server) leaves the link on the
    flow run that made the evaluate output, with the command that reopens its database."""
    import json

    from mediswift.report_links import evaluated_by, ui_links

    home, cfg = tmp_path / "home", PipelineConfig(name="links")
    arts = make_home(home)
    manifest = json.loads(arts["evaluate"].manifest_path.read_text())
    manifest["flow_run"] = {"id": "e1", "name": "demo-all-abc", "ui": None,
                            "prefect_home": str(home / "prefect")}  # fmt: skip
    arts["evaluate"].manifest_path.write_text(json.dumps(manifest))
    ran = evaluated_by(arts["evaluate"])
    assert ran is not None and ran.id == "e1"
    links = ui_links(cfg, home, ran.id, ran.name, ran.ui, ran.prefect_home)
    write_report(cfg, home, arts, links=links)
    md = (home / "report" / "links" / "report.md").read_text()
    assert "[demo-all-abc](http://127.0.0.1:4200/runs/flow-run/e1)" in md
    assert 'PREFECT_HOME="$MEDISWIFT_HOME/prefect" .venv/bin/prefect server start' in md
    # An evaluate output made before runs were recorded links nothing of its own.
    del manifest["flow_run"]
    arts["evaluate"].manifest_path.write_text(json.dumps(manifest))
    assert evaluated_by(arts["evaluate"]) is None


def test_the_snapshot_line_counts_its_drops_by_publication_year() -> None:
    """The report says how many PubMed records the DateRevised snapshot dropped, by publication
    year (old articles revised later show up as old years), and the PMC articles it dropped."""
    from mediswift.report_sections import rules_lines

    rules = {"max_revised": "2023-01-01", "revised_after_by_year": {"1998": 2, "2021": 5}}
    line = rules_lines(rules, {"revised_after": 7, "published_after": 3})
    assert "copies revised later dropped or replaced by an earlier copy: 7" in line
    assert "by publication year 1998: 2, 2021: 5" in line
    assert "PMC articles published on or after it dropped: 3" in line
    assert "by publication year" not in rules_lines({"max_revised": "2023-01-01"}, {})


def test_the_console_summary_is_a_line_per_task() -> None:
    results = _three_task_results()
    text = tables.summary(results, "score", "report.html")
    lines = text.splitlines()
    assert lines[0].startswith("results on test") and "report.html" in lines[0]
    assert len(lines) == 1 + len(tables.tasks_in(results))
    assert all("tiny-dense" in line for line in lines[1:])
