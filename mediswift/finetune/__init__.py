"""Dense fine-tuning with soft prompts on PubMedQA and HoC (the paper's Sections 2.2 and 4).

formats   the task interface: examples, target sentences, candidate grammar, parsing, metric
pubmedqa  PQA-L (official split), PQA-A / PQA-U for multi-stage fine-tuning
hoc       Hallmarks of Cancer, BLURB split, document-level multi-label targets
metrics   accuracy and micro-F1
scoring   batching, loss masks, constrained scoring and greedy generation
trainer   one dense fine-tune with early stopping on the dev metric
point     one grid point (variant, task, batch, lr, seed): load, train, evaluate, save
grid      grid points, selection of (batch, lr) by mean dev metric, mean/std over seeds
tables    Tables 3 and 4 (Markdown and CSV) and the accuracy-vs-FLOPs plot
"""
