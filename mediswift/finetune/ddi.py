"""DDI-2013 as a downstream task: drug-drug interactions with their type, end to end by generation.

Data and target rules: `mediswift.finetune.ddi_data` (BioGPT's RE-DDI example); metric and
baseline: `mediswift.finetune.relation_task`. The raw files are BioGPT's JSON at a fixed commit
(the mirror's `biogpt/` folder stands for it).
"""

from __future__ import annotations

from pathlib import Path

from mediswift.finetune.bc5cdr import UPSTREAM
from mediswift.finetune.ddi_data import FILES, TEMPLATE, ddi_splits
from mediswift.finetune.registry import register
from mediswift.finetune.relation_task import RelationFields, RelationTask
from mediswift.finetune.relations import RelationExample
from mediswift.finetune.task import TableLayout
from mediswift.sections import Grid, task_settings

DDISettings = task_settings(
    "DDISettings",
    url=UPSTREAM,
    grid=Grid(batch_sizes=[16, 32], learning_rates=[1e-4, 5e-5, 1e-5]),
    epochs=50,
    prompt_tokens=9,
    base=RelationFields,
)


@register
class DDI(RelationTask):
    name = "ddi"
    Settings = DDISettings
    template = TEMPLATE
    upstream = UPSTREAM
    mirror_folder = "biogpt/"
    files = FILES
    table = TableLayout(
        "table_ddi",
        "DDI-2013 drug-drug interactions, test micro-F1 (%) of exact typed triples",
        "micro-F1 (%)",
        digits=2,
    )

    def read_splits(self, files: dict[str, Path]) -> dict[str, list[RelationExample]]:
        return ddi_splits(files["train"], files["dev"], files["test"])
