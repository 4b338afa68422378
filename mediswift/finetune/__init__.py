"""Dense fine-tuning with soft prompts on downstream tasks (the paper's Sections 2.2 and 4).

task      the plug-in base: settings, files, splits, targets, parsing, metric, table layout
registry  name -> task class (built-ins, entry points, `register`)
pubmedqa  PQA-L (official split), PQA-A / PQA-U for multi-stage fine-tuning
hoc       Hallmarks of Cancer, BLURB split, document-level multi-label targets
bc5cdr    BC5CDR chemical-induced-disease relations, end to end by generation (as BioGPT)
ddi       DDI-2013 drug-drug interactions, end to end by generation (as BioGPT)
formats   examples, candidates and their JSONL files
sources   fetching a task's raw files into the home
metrics   accuracy and micro-F1
scoring   batching, loss masks, constrained scoring and greedy generation
trainer   one dense fine-tune with early stopping on the dev metric
keys      the unit specs (task data, grid points, stage and labels units), keyed by their fields
schedule  multi-stage sweeps planned stage by stage
point     one grid point (variant, task, batch, lr, seed): build, fit, predict, write
finetuned a fine-tuned model in and out: the dense start, the saved best state
labels    pseudo labels: labelling an unlabelled split, and reading the labels back
predictions  an evaluated unit's predictions, metrics and degenerate flags
results   what the units return: their manifests, typed
grid      grid points, selection of (batch, lr) by mean dev metric, mean/std over seeds
tables    one table per task (Markdown and CSV) and the metric-vs-FLOPs plot
"""
