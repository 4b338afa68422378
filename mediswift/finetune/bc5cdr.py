"""BC5CDR as a downstream task: chemical-induced disease relations, end to end by generation.

Data and target rules: `mediswift.finetune.bc5cdr_data` (BioGPT's RE-BC5CDR example); metric
and baseline: `mediswift.finetune.relation_task`. The raw files are BioGPT's copy of the
BioCreative V CDR corpus at a fixed commit (the mirror's `biogpt/` folder stands for it).
"""

from __future__ import annotations

from pathlib import Path

from mediswift.finetune.bc5cdr_data import FILES, TEMPLATE, bc5cdr_splits
from mediswift.finetune.registry import register
from mediswift.finetune.relation_task import RelationFields, RelationTask
from mediswift.finetune.relations import RelationExample
from mediswift.finetune.task import TableLayout
from mediswift.sections import Grid, task_settings

UPSTREAM = (
    "https://raw.githubusercontent.com/microsoft/BioGPT/"
    "648f7d6503c038b44e70b7510bf431c7be94e891/data/"
)

BC5CDRSettings = task_settings(
    "BC5CDRSettings",
    url=UPSTREAM,
    # BioGPT's RE examples use a 9-token prompt; the grid is ours (the paper has no BC5CDR).
    grid=Grid(batch_sizes=[16, 32], learning_rates=[1e-4, 5e-5, 1e-5]),
    epochs=50,
    prompt_tokens=9,
    base=RelationFields,
)


@register
class BC5CDR(RelationTask):
    name = "bc5cdr"
    Settings = BC5CDRSettings
    template = TEMPLATE
    upstream = UPSTREAM
    mirror_folder = "biogpt/"
    files = FILES
    table = TableLayout(
        "table_bc5cdr",
        "BC5CDR chemical-induced disease relations, test micro-F1 (%) of exact triples",
        "micro-F1 (%)",
        digits=2,
    )

    def read_splits(self, files: dict[str, Path]) -> dict[str, list[RelationExample]]:
        return bc5cdr_splits(files["train"], files["dev"], files["test"])
